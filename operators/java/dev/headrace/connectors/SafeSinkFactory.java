package dev.headrace.connectors;

import org.apache.flink.configuration.ConfigOption;
import org.apache.flink.table.catalog.ResolvedCatalogTable;
import org.apache.flink.table.connector.ChangelogMode;
import org.apache.flink.table.connector.sink.DynamicTableSink;
import org.apache.flink.table.connector.sink.SinkV2Provider;
import org.apache.flink.table.connector.sink.legacy.SinkFunctionProvider;
import org.apache.flink.table.factories.DynamicTableSinkFactory;
import org.apache.flink.table.factories.FactoryUtil;

import java.util.HashMap;
import java.util.Map;
import java.util.Set;

/**
 * {@code 'connector' = 'headrace-jdbc'} and {@code 'headrace-kafka'}: Flink's {@code jdbc} and
 * {@code kafka} table sinks, unchanged, except that closing them after a failure never throws.
 *
 * <p>When PostgreSQL goes away, the JDBC sink's flush fails, the task fails, and then the sink's
 * {@code close()} tries to flush again and throws; the Kafka writer's {@code close()} rethrows
 * the sends its producer aborted when the task was cancelled. An exception while a task is
 * already failing is fatal to the whole TaskManager: on a local mini-cluster (or a TaskManager
 * nobody restarts) the job then waits for slots that never come back. Nothing is lost by closing
 * quietly: everything after the last completed checkpoint is replayed on restore, and what a sink
 * held up to that checkpoint was flushed when it was taken.
 *
 * <p>The delegate factories are found at run time, so this jar needs no connector to build.
 *
 * <p>The option {@code 'headrace.metric' = 'dead_lettered'} (removed before the delegate sees the
 * options) names a counter, {@code headrace.dead_lettered} in the sink operator's metric group, of
 * the rows the sink is given.
 */
public abstract class SafeSinkFactory implements DynamicTableSinkFactory {
    static final String METRIC_OPTION = "headrace.metric";
    private final String identifier;
    private final String delegate;

    SafeSinkFactory(String identifier, String delegate) {
        this.identifier = identifier;
        this.delegate = delegate;
    }

    /** {@code headrace-jdbc}. */
    public static final class Jdbc extends SafeSinkFactory {
        public Jdbc() {
            super("headrace-jdbc", "jdbc");
        }
    }

    /** {@code headrace-kafka} (sinks only; sources use {@code kafka}). */
    public static final class Kafka extends SafeSinkFactory {
        public Kafka() {
            super("headrace-kafka", "kafka");
        }
    }

    @Override
    public String factoryIdentifier() {
        return identifier;
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
    public DynamicTableSink createDynamicTableSink(Context context) {
        DynamicTableSinkFactory inner = FactoryUtil.discoverFactory(
                context.getClassLoader(), DynamicTableSinkFactory.class, delegate);
        Map<String, String> options = new HashMap<>(context.getCatalogTable().getOptions());
        options.put(FactoryUtil.CONNECTOR.key(), delegate);
        String metric = options.remove(METRIC_OPTION);
        ResolvedCatalogTable table = context.getCatalogTable().copy(options);
        Context delegated = new FactoryUtil.DefaultDynamicTableContext(
                context.getObjectIdentifier(), table, context.getEnrichmentOptions(),
                context.getConfiguration(), context.getClassLoader(), context.isTemporary());
        return new SafeSink(inner.createDynamicTableSink(delegated), metric);
    }

    /** The delegate sink, its sink function wrapped. */
    static final class SafeSink implements DynamicTableSink {
        private final DynamicTableSink inner;
        private final String metric;

        SafeSink(DynamicTableSink inner, String metric) {
            this.inner = inner;
            this.metric = metric;
        }

        @Override
        public ChangelogMode getChangelogMode(ChangelogMode requested) {
            return inner.getChangelogMode(requested);
        }

        @Override
        public SinkRuntimeProvider getSinkRuntimeProvider(Context context) {
            SinkRuntimeProvider provider = inner.getSinkRuntimeProvider(context);
            if (provider instanceof SinkFunctionProvider) {
                SinkFunctionProvider functions = (SinkFunctionProvider) provider;
                return SinkFunctionProvider.of(new QuietClose<>(functions.createSinkFunction(), metric),
                        functions.getParallelism().orElse(null));
            }
            if (provider instanceof SinkV2Provider) {
                SinkV2Provider sinks = (SinkV2Provider) provider;
                return SinkV2Provider.of(QuietWriters.wrap(sinks.createSink(), metric),
                        sinks.getParallelism().orElse(null));
            }
            throw new UnsupportedOperationException("cannot make a sink of type "
                    + provider.getClass().getName() + " close quietly");
        }

        @Override
        public DynamicTableSink copy() {
            return new SafeSink(inner.copy(), metric);
        }

        @Override
        public String asSummaryString() {
            return inner.asSummaryString();
        }
    }
}
