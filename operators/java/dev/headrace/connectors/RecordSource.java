package dev.headrace.connectors;

import dev.headrace.functions.RecordDecoder;

import org.apache.flink.api.common.eventtime.SerializableTimestampAssigner;
import org.apache.flink.api.common.eventtime.WatermarkStrategy;
import org.apache.flink.api.connector.source.SourceSplit;
import org.apache.flink.configuration.ConfigOption;
import org.apache.flink.configuration.ConfigOptions;
import org.apache.flink.streaming.api.datastream.DataStream;
import org.apache.flink.streaming.api.datastream.DataStreamSource;
import org.apache.flink.streaming.api.datastream.SingleOutputStreamOperator;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.streaming.api.transformations.SourceTransformation;
import org.apache.flink.table.api.DataTypes;
import org.apache.flink.table.catalog.Column;
import org.apache.flink.table.catalog.ResolvedCatalogTable;
import org.apache.flink.table.catalog.ResolvedSchema;
import org.apache.flink.table.catalog.UniqueConstraint;
import org.apache.flink.table.connector.ChangelogMode;
import org.apache.flink.table.connector.ProviderContext;
import org.apache.flink.table.connector.source.DataStreamScanProvider;
import org.apache.flink.table.connector.source.DynamicTableSource;
import org.apache.flink.table.connector.source.ScanTableSource;
import org.apache.flink.table.connector.source.SourceProvider;
import org.apache.flink.table.connector.source.abilities.SupportsReadingMetadata;
import org.apache.flink.table.connector.source.abilities.SupportsSourceWatermark;
import org.apache.flink.table.connector.source.abilities.SupportsWatermarkPushDown;
import org.apache.flink.table.data.RowData;
import org.apache.flink.table.data.StringData;
import org.apache.flink.table.factories.DynamicTableSourceFactory;
import org.apache.flink.table.factories.FactoryUtil;
import org.apache.flink.table.runtime.typeutils.InternalTypeInfo;
import org.apache.flink.table.types.DataType;
import org.apache.flink.table.types.logical.RowType;

import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * {@code 'connector' = 'headrace-source'}: a job's records, decoded and judged in the source task.
 *
 * <p>It reads through another connector (Flink's {@code kafka}, or {@code filesystem} for the
 * embedded profile, with the {@code raw} format), found at run time, so this jar needs no
 * connector to build. Each record is decoded once, where the source's watermark reads its event
 * time ({@link RecordDecoder}: JSON checked against its schema, Avro, Protobuf, or only the event
 * time), and a chained operator ({@link RecordJudge}) adds the largest event time its partition
 * has had so far, kept in checkpointed operator state. So the late judgement needs no shuffle and
 * no keyed state, and every output reads the decoded columns without decoding again.
 *
 * <p>The table's physical columns, in order: {@code _payload STRING, _partition INT, _offset
 * BIGINT, _event_ms BIGINT, _event_time TIMESTAMP_LTZ(3), _max_seen BIGINT, _valid BOOLEAN,
 * _err_path STRING, _err_msg STRING}, then the decoder's fields, then (with {@code headrace.nul-fields})
 * {@code _nul STRING}. {@code WATERMARK FOR ... AS SOURCE_WATERMARK()}: the watermark is Flink's
 * bounded-out-of-orderness rule per source partition over {@code _event_ms}.
 *
 * <p>Options of its own ({@code headrace.*}); every other option goes to the delegate:
 * <ul>
 *   <li>{@code headrace.delegate}: {@code kafka} or {@code filesystem};
 *   <li>{@code headrace.decoder}, {@code headrace.spec}: the decoder's class and spec;
 *   <li>{@code headrace.out-of-orderness-ms}, {@code headrace.idle-timeout-ms};
 *   <li>{@code headrace.base64}: the delegate's lines are base64 (binary records in a file);
 *   <li>{@code headrace.nul-fields}: {@code i,j,...}, the indexes of decoder fields (strings) to
 *   flag in a last column {@code _nul STRING}: NULL when none holds U+0000, else {@code ,i,} for
 *   each that does. A later filter tests that column instead of the values: Flink's generated code
 *   copies every string column a filter reads, for every record.
 * </ul>
 */
public final class RecordSource implements DynamicTableSourceFactory {
    static final String PREFIX = "headrace.";
    static final ConfigOption<String> DELEGATE = ConfigOptions.key("headrace.delegate").stringType().noDefaultValue();

    @Override
    public String factoryIdentifier() {
        return "headrace-source";
    }

    @Override
    public Set<ConfigOption<?>> requiredOptions() {
        return Set.of();
    }

    @Override
    public Set<ConfigOption<?>> optionalOptions() {
        return Set.of();
    }

    @Override
    public DynamicTableSource createDynamicTableSource(Context context) {
        Map<String, String> all = context.getCatalogTable().getOptions();
        Map<String, String> own = new HashMap<>();
        Map<String, String> options = new HashMap<>();
        for (Map.Entry<String, String> e : all.entrySet()) {
            (e.getKey().startsWith(PREFIX) ? own : options).put(e.getKey(), e.getValue());
        }
        String delegate = own.get(DELEGATE.key());
        if (delegate == null) {
            throw new IllegalArgumentException("headrace-source needs 'headrace.delegate'");
        }
        boolean kafka = "kafka".equals(delegate);
        options.put(FactoryUtil.CONNECTOR.key(), delegate);
        options.put("format", "raw");
        // the delegate's table: the raw record, and (Kafka) its partition and offset as metadata.
        // From Kafka the record's bytes as they are (a STRING would decode them to a Java String,
        // which every later read then encodes again); a file's lines as text.
        List<Column> columns = new ArrayList<>();
        columns.add(Column.physical("_payload", kafka ? DataTypes.BYTES() : DataTypes.STRING()));
        if (kafka) {
            columns.add(Column.metadata("_partition", DataTypes.INT(), "partition", true));
            columns.add(Column.metadata("_offset", DataTypes.BIGINT(), "offset", true));
        }
        ResolvedSchema schema = new ResolvedSchema(columns, List.of(), (UniqueConstraint) null);
        ResolvedCatalogTable table = new ResolvedCatalogTable(
                context.getCatalogTable().getOrigin().copy(options), schema).copy(options);
        Context delegated = new FactoryUtil.DefaultDynamicTableContext(
                context.getObjectIdentifier(), table, context.getEnrichmentOptions(),
                context.getConfiguration(), context.getClassLoader(), context.isTemporary());
        DynamicTableSourceFactory factory = FactoryUtil.discoverFactory(
                context.getClassLoader(), DynamicTableSourceFactory.class, delegate);
        ScanTableSource inner = (ScanTableSource) factory.createDynamicTableSource(delegated);
        DataType innerType;
        if (kafka) {
            innerType = DataTypes.ROW(DataTypes.FIELD("_payload", DataTypes.BYTES()),
                    DataTypes.FIELD("_partition", DataTypes.INT()), DataTypes.FIELD("_offset", DataTypes.BIGINT()));
            ((SupportsReadingMetadata) inner).applyReadableMetadata(List.of("partition", "offset"), innerType);
        } else {
            innerType = DataTypes.ROW(DataTypes.FIELD("_payload", DataTypes.STRING()));
        }
        RowType produced = (RowType) context.getPhysicalRowDataType().getLogicalType();
        return new Table(inner, kafka, produced, own);
    }

    /** The table source: the delegate's source, its watermark, and the judging operator after it. */
    static final class Table implements ScanTableSource, SupportsSourceWatermark {
        private final ScanTableSource inner;
        private final boolean kafka;
        private final RowType produced;
        private final Map<String, String> own;

        Table(ScanTableSource inner, boolean kafka, RowType produced, Map<String, String> own) {
            this.inner = inner;
            this.kafka = kafka;
            this.produced = produced;
            this.own = own;
        }

        @Override
        public void applySourceWatermark() {
            // the watermark is always this source's own (see produceDataStream)
        }

        @Override
        public ChangelogMode getChangelogMode() {
            return ChangelogMode.insertOnly();
        }

        @Override
        public ScanRuntimeProvider getScanRuntimeProvider(ScanContext context) {
            String decoder = own.get("headrace.decoder");
            String spec = own.get("headrace.spec");
            boolean base64 = Boolean.parseBoolean(own.getOrDefault("headrace.base64", "false"));
            String nulFields = own.getOrDefault("headrace.nul-fields", "");
            long ooo = Long.parseLong(own.getOrDefault("headrace.out-of-orderness-ms", "0"));
            long idle = Long.parseLong(own.getOrDefault("headrace.idle-timeout-ms", "0"));
            // Flink's bounded-out-of-orderness rule per source split: max event time - ooo - 1 ms
            WatermarkStrategy<RowData> strategy = WatermarkStrategy
                    .<RowData>forBoundedOutOfOrderness(Duration.ofMillis(ooo))
                    .withTimestampAssigner(new EventTimes(decoder, spec, kafka, base64));
            WatermarkStrategy<RowData> watermarks = idle > 0 ? strategy.withIdleness(Duration.ofMillis(idle)) : strategy;
            // the delegate generates it where it reads (per Kafka partition), if it can
            boolean pushed = inner instanceof SupportsWatermarkPushDown;
            if (pushed) {
                ((SupportsWatermarkPushDown) inner).applyWatermark(watermarks);
            }
            ScanRuntimeProvider provider = inner.getScanRuntimeProvider(context);
            boolean isKafka = kafka;
            RowType type = produced;
            return new DataStreamScanProvider() {
                @Override
                public DataStream<RowData> produceDataStream(ProviderContext uids, StreamExecutionEnvironment env) {
                    DataStream<RowData> read;
                    if (provider instanceof SourceProvider) {
                        DataStreamSource<RowData> source = env.fromSource(
                                ((SourceProvider) provider).createSource(), watermarks, "headrace source");
                        uids.generateUid("read").ifPresent(source::uid);
                        read = source;
                    } else if (provider instanceof DataStreamScanProvider) {
                        read = ((DataStreamScanProvider) provider).produceDataStream(uids, env);
                        if (isKafka && provider.isBounded() && read.getTransformation() instanceof SourceTransformation) {
                            // a bounded Kafka read ends on every subtask at once (see HeldSource)
                            read = held(env, (SourceTransformation<RowData, ?, ?>) read.getTransformation());
                        }
                        if (!pushed) {
                            SingleOutputStreamOperator<RowData> timed = read.assignTimestampsAndWatermarks(watermarks);
                            uids.generateUid("watermarks").ifPresent(timed::uid);
                            read = timed;
                        }
                    } else {
                        throw new UnsupportedOperationException("headrace-source cannot read through "
                                + provider.getClass().getName());
                    }
                    SingleOutputStreamOperator<RowData> judged = read.transform("headrace decode and judge",
                            InternalTypeInfo.of(type), new RecordJudge(decoder, spec, base64, isKafka, nulFields));
                    uids.generateUid("judge").ifPresent(judged::uid);
                    return judged;
                }

                @Override
                public boolean isBounded() {
                    return provider.isBounded();
                }
            };
        }

        @Override
        public DynamicTableSource copy() {
            return new Table((ScanTableSource) inner.copy(), kafka, produced, own);
        }

        @Override
        public String asSummaryString() {
            return "headrace-source(" + inner.asSummaryString() + ")";
        }
    }

    /** The same read (source, watermarks, name, uid, parallelism), its readers held to end together. */
    private static <S extends SourceSplit, E> DataStream<RowData> held(
            StreamExecutionEnvironment env, SourceTransformation<RowData, S, E> read) {
        DataStreamSource<RowData> source = env.fromSource(
                new HeldSource<>(read.getSource()), read.getWatermarkStrategy(), read.getName());
        if (read.getUid() != null) {
            source.uid(read.getUid());
        }
        if (read.getParallelism() > 0) {
            source.setParallelism(read.getParallelism());
        }
        return source;
    }

    /**
     * The raw record's payload as the decoders take it: Kafka's bytes as they are, a file's line
     * as its UTF-8 bytes (or, {@code base64}, the bytes it encodes). Always a string backed by
     * bytes, so that no later read (decoder, copies, dead letters) encodes it again.
     */
    static StringData payload(RowData record, boolean kafka, boolean base64) {
        if (record.isNullAt(0)) {
            return null;
        }
        if (kafka) {
            return StringData.fromBytes(record.getBinary(0));
        }
        byte[] text = record.getString(0).toBytes();
        return StringData.fromBytes(base64 ? java.util.Base64.getMimeDecoder().decode(text) : text);
    }

    /** The event time of each record (0 when it has none: it cannot move the watermark), decoded once. */
    static final class EventTimes implements SerializableTimestampAssigner<RowData> {
        private static final long serialVersionUID = 1L;
        private final String decoder;
        private final String spec;
        private final boolean kafka;
        private final boolean base64;
        private transient RecordDecoder decoding;
        private transient RecordDecoder.Mine mine;

        EventTimes(String decoder, String spec, boolean kafka, boolean base64) {
            this.decoder = decoder;
            this.spec = spec;
            this.kafka = kafka;
            this.base64 = base64;
        }

        @Override
        public long extractTimestamp(RowData record, long recordTimestamp) {
            if (decoding == null) {
                decoding = RecordDecoder.of(decoder, spec);
                mine = new RecordDecoder.Mine();
            }
            RowData row = RecordDecoder.decodeOnce(decoding, record, () -> payload(record, kafka, base64), mine.get());
            return row.isNullAt(2) ? 0L : row.getLong(2);
        }
    }
}
