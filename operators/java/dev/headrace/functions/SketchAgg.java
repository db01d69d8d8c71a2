package dev.headrace.functions;

import org.apache.flink.table.annotation.DataTypeHint;
import org.apache.flink.table.annotation.InputGroup;
import org.apache.flink.table.functions.AggregateFunction;

/**
 * {@code hr_sketch(kind, value)}: the mergeable state of a window's values, as bytes (see
 * {@link Sketches}): {@code 'distinct'}, {@code 'hll'}, {@code 'dd'}, {@code 'first'} or {@code 'last'}. Mergeable, so the window
 * aggregation runs in two phases (a local one in the source task).
 */
public final class SketchAgg extends AggregateFunction<byte[], SketchAgg.Acc> {
    private static final long serialVersionUID = 1L;

    /** The accumulator: the sketch's bytes (null until a value came). */
    public static final class Acc {
        public byte[] state;
        public String kind;
    }

    @Override
    public Acc createAccumulator() {
        return new Acc();
    }

    public void accumulate(Acc acc, String kind, @DataTypeHint(inputGroup = InputGroup.ANY) Object value) {
        acc.kind = kind;
        acc.state = Sketches.add(kind, acc.state, value);
    }

    /** {@code hr_sketch('first' | 'last', value, event ms, partition, offset)}. */
    public void accumulate(Acc acc, String kind, @DataTypeHint(inputGroup = InputGroup.ANY) Object value,
                           Long eventMs, Integer partition, Long offset) {
        acc.kind = kind;
        acc.state = Sketches.merge(kind, acc.state, Picks.of(value, eventMs, partition, offset));
    }

    public void merge(Acc acc, Iterable<Acc> others) {
        for (Acc other : others) {
            if (other.kind != null) {
                acc.kind = other.kind;
                // never share another accumulator's bytes: adding to them may write in place
                acc.state = acc.state == null ? (other.state == null ? null : other.state.clone())
                        : Sketches.merge(other.kind, acc.state, other.state);
            }
        }
    }

    @Override
    public byte[] getValue(Acc acc) {
        return acc.state;
    }
}
