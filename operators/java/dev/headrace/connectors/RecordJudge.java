package dev.headrace.connectors;

import dev.headrace.functions.RecordDecoder;

import org.apache.flink.api.common.state.ListState;
import org.apache.flink.api.common.state.ListStateDescriptor;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.api.java.tuple.Tuple2;
import org.apache.flink.metrics.Counter;
import org.apache.flink.runtime.state.StateInitializationContext;
import org.apache.flink.runtime.state.StateSnapshotContext;
import org.apache.flink.streaming.api.operators.AbstractStreamOperator;
import org.apache.flink.streaming.api.operators.OneInputStreamOperator;
import org.apache.flink.streaming.api.watermark.Watermark;
import org.apache.flink.streaming.runtime.streamrecord.StreamRecord;
import org.apache.flink.table.data.GenericRowData;
import org.apache.flink.table.data.RowData;
import org.apache.flink.table.data.StringData;
import org.apache.flink.table.data.TimestampData;

import java.io.IOException;
import java.io.Writer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * The operator chained after {@code headrace-source}'s reader: each record's decoded row (the
 * decoding the watermark's timestamp assigner made of that very record), and the largest event
 * time its partition has had so far, this record included ({@code _max_seen}), from which every
 * aggregate judges lateness per partition.
 *
 * <p>The largest event time per partition is operator state, snapshotted with the source's
 * offsets at the same barrier: a restore (at any parallelism; union state gives every subtask
 * every partition's value, and the largest copy wins) judges each record exactly as the first
 * run did. It runs in the source task, so nothing is shuffled and no keyed state is touched per
 * record. Records without an event time count as 0, as for the watermark.
 *
 * <p>It counts the records it reads in {@code headrace.records_in}. With the environment variable
 * {@code HEADRACE_TRACE_WATERMARKS} set to a directory (the benchmark's latency runs), it writes
 * there, per subtask, each new watermark it passes on and the wall clock when it came: the moment
 * a window can close, which the benchmark measures a window's row from.
 */
final class RecordJudge extends AbstractStreamOperator<RowData> implements OneInputStreamOperator<RowData, RowData> {
    private static final long serialVersionUID = 1L;
    /** The partition of records without one (a file of the embedded profile). */
    private static final int NO_PARTITION = Integer.MIN_VALUE;

    private final String decoder;
    private final String spec;
    private final boolean base64;
    private final boolean partitioned;
    /** The decoder fields whose U+0000 is flagged in the last column ({@code i,j,...}: their indexes). */
    private final String nulFields;

    private transient RecordDecoder decoding;
    private transient RecordDecoder.Mine mine;
    private transient Map<Integer, long[]> maxSeen;
    private transient ListState<Tuple2<Integer, Long>> state;
    private transient int[] nulIndexes;
    private transient Counter recordsIn;
    private transient StreamRecord<RowData> out;
    private transient Writer trace;
    private transient String tracePrefix;
    private transient long traced;

    RecordJudge(String decoder, String spec, boolean base64, boolean partitioned, String nulFields) {
        this.decoder = decoder;
        this.spec = spec;
        this.base64 = base64;
        this.partitioned = partitioned;
        this.nulFields = nulFields;
    }

    @Override
    public void initializeState(StateInitializationContext context) throws Exception {
        super.initializeState(context);
        state = context.getOperatorStateStore().getUnionListState(
                new ListStateDescriptor<>("headrace-max-event-time", Types.TUPLE(Types.INT, Types.LONG)));
        maxSeen = new HashMap<>();
        if (context.isRestored()) {
            for (Tuple2<Integer, Long> entry : state.get()) {
                long[] seen = maxSeen.computeIfAbsent(entry.f0, p -> new long[] {Long.MIN_VALUE});
                seen[0] = Math.max(seen[0], entry.f1);
            }
        }
    }

    @Override
    public void open() throws Exception {
        super.open();
        decoding = RecordDecoder.of(decoder, spec);
        mine = new RecordDecoder.Mine();
        String[] flagged = nulFields.isEmpty() ? new String[0] : nulFields.split(",");
        nulIndexes = new int[flagged.length];
        for (int i = 0; i < flagged.length; i++) {
            nulIndexes[i] = Integer.parseInt(flagged[i]);
        }
        recordsIn = getMetricGroup().addGroup("headrace").counter("records_in");
        out = new StreamRecord<>(null);
        String traceDir = System.getenv("HEADRACE_TRACE_WATERMARKS");
        if (traceDir != null && !traceDir.isEmpty()) {
            int subtask = getRuntimeContext().getTaskInfo().getIndexOfThisSubtask();
            Path file = Paths.get(traceDir, "watermarks-" + getRuntimeContext().getJobInfo().getJobId() + "-"
                    + subtask + "-" + getRuntimeContext().getTaskInfo().getAttemptNumber() + ".tsv");
            tracePrefix = subtask + "\t";
            trace = Files.newBufferedWriter(file, StandardCharsets.UTF_8);
            traced = Long.MIN_VALUE;
        }
    }

    @Override
    public void processWatermark(Watermark mark) throws Exception {
        if (trace != null && mark.getTimestamp() > traced) {
            traced = mark.getTimestamp();
            trace.write(tracePrefix + traced + "\t" + System.currentTimeMillis() + "\n");
            trace.flush();
        }
        super.processWatermark(mark);
    }

    @Override
    public void close() throws Exception {
        if (trace != null) {
            try {
                trace.close();
            } catch (IOException e) {
                LOG.warn("could not close the watermark trace", e);
            }
            trace = null;
        }
        super.close();
    }

    @Override
    public void processElement(StreamRecord<RowData> element) throws Exception {
        RowData record = element.getValue();
        RecordDecoder.Last last = mine.get();
        RowData decoded = RecordDecoder.decodeOnce(decoding, record, () -> RecordSource.payload(record, partitioned,
                base64), last);
        StringData payload = last.payload;
        last.record = null; // the next record object may be this one, reused
        Integer partition = partitioned && !record.isNullAt(1) ? record.getInt(1) : null;
        Long offset = partitioned && !record.isNullAt(2) ? record.getLong(2) : null;
        long eventMs = decoded.isNullAt(2) ? 0L : decoded.getLong(2);
        long[] seen = maxSeen.computeIfAbsent(partition == null ? NO_PARTITION : partition,
                p -> new long[] {Long.MIN_VALUE});
        if (eventMs > seen[0]) {
            seen[0] = eventMs;
        }
        recordsIn.inc();
        int fields = decoding.fieldCount();
        GenericRowData row = new GenericRowData(9 + fields + (nulIndexes.length > 0 ? 1 : 0));
        row.setField(0, payload);
        row.setField(1, partition);
        row.setField(2, offset);
        row.setField(3, eventMs);
        row.setField(4, TimestampData.fromEpochMillis(eventMs));
        row.setField(5, seen[0]);
        if (decoded instanceof GenericRowData) {
            GenericRowData source = (GenericRowData) decoded;
            // whether it decoded: every output filters on it, and a boolean is read without copying
            row.setField(6, source.getField(1) == null);
            row.setField(7, source.getField(0));
            row.setField(8, source.getField(1));
            for (int i = 0; i < fields; i++) {
                row.setField(9 + i, source.getField(3 + i));
            }
            if (nulIndexes.length > 0) {
                row.setField(9 + fields, nulFlags(source));
            }
        } else {
            throw new IllegalStateException("a decoder answered with " + decoded.getClass().getName());
        }
        if (element.hasTimestamp()) {
            out.replace(row, element.getTimestamp());
        } else {
            out.replace(row);
            out.eraseTimestamp();
        }
        output.collect(out);
    }

    /** {@code ,i,} for each flagged field {@code i} holding U+0000, or null when none does (nearly always). */
    private StringData nulFlags(GenericRowData decoded) {
        StringBuilder flags = null;
        for (int index : nulIndexes) {
            Object value = decoded.getField(3 + index);
            if (value instanceof StringData && RecordDecoder.hasNul((StringData) value)) {
                flags = (flags == null ? new StringBuilder(",") : flags).append(index).append(',');
            }
        }
        return flags == null ? null : StringData.fromString(flags.toString());
    }

    @Override
    public void snapshotState(StateSnapshotContext context) throws Exception {
        super.snapshotState(context);
        List<Tuple2<Integer, Long>> entries = new ArrayList<>(maxSeen.size());
        for (Map.Entry<Integer, long[]> e : maxSeen.entrySet()) {
            entries.add(Tuple2.of(e.getKey(), e.getValue()[0]));
        }
        state.update(entries);
    }
}
