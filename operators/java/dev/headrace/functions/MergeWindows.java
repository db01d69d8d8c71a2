package dev.headrace.functions;

import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.JsonNode;
import org.apache.flink.table.api.DataTypes;
import org.apache.flink.table.catalog.DataTypeFactory;
import org.apache.flink.table.functions.ProcessTableFunction;
import org.apache.flink.table.types.DataType;
import org.apache.flink.table.types.inference.CallContext;
import org.apache.flink.table.types.inference.StateTypeStrategy;
import org.apache.flink.table.types.inference.StaticArgument;
import org.apache.flink.table.types.inference.StaticArgumentTrait;
import org.apache.flink.table.types.inference.TypeInference;
import org.apache.flink.types.Row;

import java.io.IOException;
import java.util.ArrayList;
import java.util.EnumSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Optional;
import java.util.concurrent.ConcurrentHashMap;

/**
 * {@code hr_merge_windows(input => TABLE parts PARTITION BY <keys>, window_start, window_end,
 * spec => '...', on_time => DESCRIPTOR(window_time))}: the windows of an aggregate with allowed
 * lateness, from their parts. A window TVF aggregates each window's records that were ahead of
 * their partition's watermark, in two phases, and emits its parts once, when Flink's watermark
 * passes the window's end; records judged on time but behind their partition's watermark (which a
 * window TVF would drop) come one by one. This function adds them up in keyed state and emits the
 * window's measures for every part it is given: first when the window closes, then again for each
 * record of it that comes later, as a group window's late firing does. The state of a window is
 * dropped once the watermark is past its end plus the allowed lateness, when no part of it can
 * come any more.
 *
 * <p>The spec, a literal: {@code {"parts": [[name, "sum"|"min"|"max"|"distinct"|"hll"|"dd"|"first"|"last"|"topk"|"rows",
 * SQL type], ...], "out": [[name, SQL type, "part", i] | [name, "DOUBLE", "div", i, j] | [name, "BIGINT",
 * "count", i, kind] | [name, "DOUBLE", "quantile", i, q] | [name, SQL type, "pick", i] | [name, "STRING",
 * "top", i, k, bare], ...],
 * "lateness_ms": L, "window_ms": W}} (W only for a
 * roll-up, whose parts come at their finer windows' times); each input row
 * has the parts' columns by name and {@code _p_records}; the output has the measures and
 * {@code _records}. The parts named after a sketch kind are {@link Sketches} (or {@link Picks}) bytes, merged as such.
 */
public final class MergeWindows extends ProcessTableFunction<Row> {
    private static final long serialVersionUID = 1L;
    private static final ConcurrentHashMap<String, Spec> SPECS = new ConcurrentHashMap<>();
    private transient String specText;
    private transient Spec compiled;

    /** A parsed spec. */
    static final class Spec {
        final String[] parts;
        final String[] ops;
        final String[] partTypes;
        final String[] outNames;
        final String[] outTypes;
        final int[][] outFrom; // {i} (a part) or {i, j} (part i divided by part j)
        final String[] outRead; // null, or how a sketch part is read: "count" or "quantile"
        final String[] outKind; // the sketch's kind ("count")
        final double[] outQ; // the quantile ("quantile")
        final int[] outK; // how many values ("top")
        final boolean[] outBare; // whether they are numbers or booleans ("top")
        final long latenessMs;
        final long windowMs; // a roll-up's window (0: the parts' own windows)

        Spec(JsonNode root) {
            JsonNode p = root.get("parts");
            parts = new String[p.size()];
            ops = new String[p.size()];
            partTypes = new String[p.size()];
            for (int i = 0; i < p.size(); i++) {
                parts[i] = p.get(i).get(0).asText();
                ops[i] = p.get(i).get(1).asText();
                partTypes[i] = p.get(i).get(2).asText();
            }
            JsonNode o = root.get("out");
            outNames = new String[o.size()];
            outTypes = new String[o.size()];
            outFrom = new int[o.size()][];
            outRead = new String[o.size()];
            outKind = new String[o.size()];
            outQ = new double[o.size()];
            outK = new int[o.size()];
            outBare = new boolean[o.size()];
            for (int i = 0; i < o.size(); i++) {
                outNames[i] = o.get(i).get(0).asText();
                outTypes[i] = o.get(i).get(1).asText();
                String how = o.get(i).get(2).asText();
                outFrom[i] = "div".equals(how)
                        ? new int[] {o.get(i).get(3).asInt(), o.get(i).get(4).asInt()}
                        : new int[] {o.get(i).get(3).asInt()};
                if ("count".equals(how)) {
                    outRead[i] = how;
                    outKind[i] = o.get(i).get(4).asText();
                } else if ("pick".equals(how)) {
                    outRead[i] = how;
                } else if ("top".equals(how)) {
                    outRead[i] = how;
                    outK[i] = o.get(i).get(4).asInt();
                    outBare[i] = o.get(i).get(5).asBoolean();
                } else if ("quantile".equals(how)) {
                    outRead[i] = how;
                    outQ[i] = o.get(i).get(4).asDouble();
                }
            }
            latenessMs = root.get("lateness_ms").asLong();
            windowMs = root.has("window_ms") ? root.get("window_ms").asLong() : 0L;
        }

        static Spec parse(String text) {
            try {
                return new Spec(RecordCheck.MAPPER.readTree(text));
            } catch (IOException e) {
                throw new IllegalArgumentException("hr_merge_windows: the spec is not JSON: " + e.getMessage());
            }
        }
    }

    private Spec spec(String text) {
        if (text != specText) {
            compiled = SPECS.computeIfAbsent(text, Spec::parse);
            specText = text;
        }
        return compiled;
    }

    public void eval(Context ctx, Row acc, Row input, String spec) {
        Spec s = spec(spec);
        for (int i = 0; i < s.parts.length; i++) {
            acc.setField(i, merge(s.ops[i], acc.getField(i), input.getField(s.parts[i])));
        }
        int records = s.parts.length;
        acc.setField(records, merge("sum", acc.getField(records), input.getField("_p_records")));
        TimeContext<Long> time = ctx.timeContext(Long.class);
        Long at = time.time(); // the window's time: its end - 1 ms
        if (at != null && s.windowMs > 0) {
            // a roll-up's parts come at the times of the finer windows: the coarser window's time
            at = Math.floorDiv(at, s.windowMs) * s.windowMs + s.windowMs - 1;
        }
        if (at != null) {
            // unnamed: the timer service alone (a named timer is also a map-state entry, and
            // clearing named timers iterates that map: a RocksDB seek per window)
            time.registerOnTime(at + s.latenessMs);
        }
        Row out = new Row(s.outNames.length + 1);
        for (int i = 0; i < s.outNames.length; i++) {
            int[] from = s.outFrom[i];
            if ("count".equals(s.outRead[i])) {
                out.setField(i, Sketches.count(s.outKind[i], (byte[]) acc.getField(from[0])));
            } else if ("top".equals(s.outRead[i])) {
                out.setField(i, TopK.top((byte[]) acc.getField(from[0]), s.outK[i], s.outBare[i]));
            } else if ("pick".equals(s.outRead[i])) {
                out.setField(i, Picks.value((byte[]) acc.getField(from[0])));
            } else if ("quantile".equals(s.outRead[i])) {
                out.setField(i, Sketches.quantile((byte[]) acc.getField(from[0]), s.outQ[i]));
            } else if (from.length == 1) {
                out.setField(i, acc.getField(from[0]));
            } else {
                Object sum = acc.getField(from[0]);
                Object count = acc.getField(from[1]);
                out.setField(i, sum == null || count == null || ((Number) count).longValue() == 0 ? null
                        : ((Number) sum).doubleValue() / ((Number) count).longValue());
            }
        }
        out.setField(s.outNames.length, acc.getField(records));
        collect(out);
    }

    public void onTimer(OnTimerContext ctx, Row acc) {
        ctx.clearAllState(); // the window's only timer is the one firing
    }

    @SuppressWarnings({"unchecked", "rawtypes"})
    private static Object merge(String op, Object have, Object value) {
        if (value == null) {
            return have;
        }
        if (have == null) {
            return value;
        }
        switch (op) {
            case "distinct":
            case "hll":
            case "dd":
                return Sketches.merge(op, ((byte[]) have).clone(), (byte[]) value);
            case "first":
            case "last":
                return Picks.merge(op, (byte[]) have, (byte[]) value); // never changed in place
            case "topk":
                return TopK.merge((byte[]) have, (byte[]) value); // a copy
            case "rows":
                return Sketches.merge(op, (byte[]) have, (byte[]) value); // a copy
            case "sum":
                if (have instanceof Double || value instanceof Double) {
                    return ((Number) have).doubleValue() + ((Number) value).doubleValue();
                }
                return ((Number) have).longValue() + ((Number) value).longValue();
            case "min":
                return ((Comparable) value).compareTo(have) < 0 ? value : have;
            default:
                return ((Comparable) value).compareTo(have) > 0 ? value : have;
        }
    }

    private static Spec specOf(CallContext context) {
        String text = context.getArgumentValue(1, String.class)
                .orElseThrow(() -> context.newValidationError("hr_merge_windows: the spec must be a literal"));
        return SPECS.computeIfAbsent(text, Spec::parse);
    }

    private static DataType type(DataTypeFactory factory, String sql) {
        return factory.createDataType(sql);
    }

    @Override
    public TypeInference getTypeInference(DataTypeFactory typeFactory) {
        LinkedHashMap<String, StateTypeStrategy> state = new LinkedHashMap<>();
        state.put("acc", StateTypeStrategy.of(context -> {
            Spec s = specOf(context);
            List<DataTypes.Field> fields = new ArrayList<>();
            for (int i = 0; i < s.parts.length; i++) {
                fields.add(DataTypes.FIELD("p" + i, type(context.getDataTypeFactory(), s.partTypes[i])));
            }
            fields.add(DataTypes.FIELD("records", DataTypes.BIGINT()));
            return Optional.of(DataTypes.ROW(fields));
        }));
        return TypeInference.newBuilder()
                .staticArguments(
                        StaticArgument.table("input", Row.class, false, EnumSet.of(StaticArgumentTrait.SET_SEMANTIC_TABLE)),
                        StaticArgument.scalar("spec", DataTypes.STRING(), false))
                .stateTypeStrategies(state)
                .outputTypeStrategy(context -> {
                    Spec s = specOf(context);
                    List<DataTypes.Field> fields = new ArrayList<>();
                    for (int i = 0; i < s.outNames.length; i++) {
                        fields.add(DataTypes.FIELD(s.outNames[i], type(context.getDataTypeFactory(), s.outTypes[i])));
                    }
                    fields.add(DataTypes.FIELD("_records", DataTypes.BIGINT()));
                    return Optional.of(DataTypes.ROW(fields));
                })
                .build();
    }
}
