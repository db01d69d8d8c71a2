package dev.headrace.connectors;

import org.apache.flink.api.connector.sink2.Sink;
import org.apache.flink.api.connector.sink2.SinkWriter;
import org.apache.flink.api.connector.sink2.WriterInitContext;
import org.apache.flink.configuration.ConfigOption;
import org.apache.flink.configuration.ConfigOptions;
import org.apache.flink.core.execution.JobClient;
import org.apache.flink.api.common.JobExecutionResult;
import org.apache.flink.table.connector.ChangelogMode;
import org.apache.flink.table.connector.RuntimeConverter;
import org.apache.flink.table.connector.sink.DynamicTableSink;
import org.apache.flink.table.connector.sink.SinkV2Provider;
import org.apache.flink.table.data.RowData;
import org.apache.flink.table.factories.DynamicTableSinkFactory;
import org.apache.flink.table.factories.FactoryUtil;
import org.apache.flink.table.types.DataType;
import org.apache.flink.types.Row;
import org.apache.flink.util.CloseableIterator;

import java.io.IOException;
import java.util.HashSet;
import java.util.NoSuchElementException;
import java.util.Set;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;

/**
 * {@code 'connector' = 'headrace-client', 'channel' = 'page-activity'}: a sink that hands its rows
 * (changelog kinds included) to the program that started the job, in the same JVM: the embedded
 * profile's mini-cluster. It does what Flink's collect sink does for {@code execute_sql(SELECT …)},
 * but as a table an {@code INSERT} writes into, so the embedded job is a statement Flink can
 * compile to a JSON plan, and a later run can load that plan instead of planning again.
 *
 * <p>The program opens the channel ({@link #open}) before the job starts and reads it through
 * {@link #rows}, which {@link CollectedRows} batches for Python. The queue is kept in the JVM's
 * system properties: the job's classes (this one included) are loaded again by the job's own
 * class loader, but the queue, the rows ({@link Row} is Flink's) and the end marker (a string) are
 * classes both loaders share. The queue is bounded, so a slow reader holds the job back rather
 * than filling the heap; a writer whose reader has gone fails instead of waiting for ever.
 */
public final class ClientSink implements DynamicTableSink {
    static final ConfigOption<String> CHANNEL = ConfigOptions.key("channel").stringType().noDefaultValue();
    private static final String PREFIX = "headrace.client-sink.";
    private static final String END = "headrace.client-sink.end";
    private static final int CAPACITY = 10_000;

    private final String channel;
    private final DataType rowType;

    ClientSink(String channel, DataType rowType) {
        this.channel = channel;
        this.rowType = rowType;
    }

    /** A new, empty channel named {@code name} (one left by an earlier job of this JVM is dropped). */
    public static void open(String name) {
        System.getProperties().put(PREFIX + name, new LinkedBlockingQueue<Object>(CAPACITY));
    }

    /** The rows of the job {@code client} runs, from channel {@code name}; the job's failure is thrown. */
    public static CloseableIterator<Row> rows(String name, JobClient client) {
        return new Rows(name, queue(name), client);
    }

    @SuppressWarnings("unchecked")
    private static BlockingQueue<Object> queue(String name) {
        Object queue = System.getProperties().get(PREFIX + name);
        if (!(queue instanceof BlockingQueue)) {
            throw new IllegalStateException("no program in this JVM reads the rows of channel '" + name
                    + "': the headrace-client sink runs only on the embedded profile's mini-cluster");
        }
        return (BlockingQueue<Object>) queue;
    }

    @Override
    public ChangelogMode getChangelogMode(ChangelogMode requested) {
        return requested;
    }

    @Override
    public SinkRuntimeProvider getSinkRuntimeProvider(Context context) {
        // at the input's parallelism (Flink refuses another for a changelog without a key): each
        // writer ends with a marker of its own, and the reader waits for all of them
        return SinkV2Provider.of(new ToClient(channel, context.createDataStructureConverter(rowType)));
    }

    @Override
    public DynamicTableSink copy() {
        return new ClientSink(channel, rowType);
    }

    @Override
    public String asSummaryString() {
        return "headrace-client(" + channel + ")";
    }

    /** The factory ({@code META-INF/services}). */
    public static final class Factory implements DynamicTableSinkFactory {
        @Override
        public String factoryIdentifier() {
            return "headrace-client";
        }

        @Override
        public Set<ConfigOption<?>> requiredOptions() {
            return Set.of(CHANNEL);
        }

        @Override
        public Set<ConfigOption<?>> optionalOptions() {
            return Set.of();
        }

        @Override
        public DynamicTableSink createDynamicTableSink(Context context) {
            FactoryUtil.TableFactoryHelper helper = FactoryUtil.createTableFactoryHelper(this, context);
            helper.validate();
            return new ClientSink(helper.getOptions().get(CHANNEL),
                    context.getCatalogTable().getResolvedSchema().toPhysicalRowDataType());
        }
    }

    /** The sink: its writers put each row on the channel's queue, and their end marker last. */
    static final class ToClient implements Sink<RowData> {
        private static final long serialVersionUID = 1L;
        private final String channel;
        private final DataStructureConverter converter;

        ToClient(String channel, DataStructureConverter converter) {
            this.channel = channel;
            this.converter = converter;
        }

        @Override
        public SinkWriter<RowData> createWriter(WriterInitContext context) throws IOException {
            converter.open(RuntimeConverter.Context.create(Thread.currentThread().getContextClassLoader()));
            return new Writer(channel, queue(channel), converter, END + " "
                    + context.getTaskInfo().getIndexOfThisSubtask() + " "
                    + context.getTaskInfo().getNumberOfParallelSubtasks());
        }
    }

    static final class Writer implements SinkWriter<RowData> {
        private final String channel;
        private final BlockingQueue<Object> queue;
        private final DataStructureConverter converter;
        private final String end;

        Writer(String channel, BlockingQueue<Object> queue, DataStructureConverter converter, String end) {
            this.channel = channel;
            this.queue = queue;
            this.converter = converter;
            this.end = end;
        }

        @Override
        public void write(RowData row, Context context) throws IOException, InterruptedException {
            put(converter.toExternal(row));
        }

        @Override
        public void flush(boolean endOfInput) throws IOException, InterruptedException {
            if (endOfInput) {
                put(end);
            }
        }

        private void put(Object item) throws InterruptedException {
            while (!queue.offer(item, 200, TimeUnit.MILLISECONDS)) {
                if (System.getProperties().get(PREFIX + channel) != queue) {
                    throw new IllegalStateException("the program reading the rows of channel '" + channel
                            + "' has stopped reading");
                }
            }
        }

        @Override
        public void close() {
        }
    }

    /** The channel's rows until every writer's end marker; when they do not come, the job's state says why. */
    static final class Rows implements CloseableIterator<Row> {
        private final String name;
        private final BlockingQueue<Object> queue;
        private final JobClient client;
        private final CompletableFuture<JobExecutionResult> result;
        private final Set<String> endedWriters = new HashSet<>();
        private Row next;
        private boolean ended;

        Rows(String name, BlockingQueue<Object> queue, JobClient client) {
            this.name = name;
            this.queue = queue;
            this.client = client;
            this.result = client.getJobExecutionResult();
        }

        @Override
        public boolean hasNext() {
            while (next == null && !ended) {
                Object item;
                try {
                    item = queue.poll(200, TimeUnit.MILLISECONDS);
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    throw new IllegalStateException("interrupted while reading the job's rows", e);
                }
                if (item instanceof Row) {
                    next = (Row) item;
                } else if (item != null) {  // a writer's end marker: "<END> <subtask> <subtasks>"
                    String[] parts = ((String) item).split(" ");
                    endedWriters.add(parts[1]);
                    ended = endedWriters.size() == Integer.parseInt(parts[2]);
                } else {
                    checkJob();
                }
            }
            return next != null;
        }

        /**
         * Nothing came for a while: a job that ended without every end marker failed (or was
         * cancelled). Its result, not its status: a local run's mini-cluster shuts down as soon as
         * its job ends, and then answers no more questions, but the result stays with the client.
         */
        private void checkJob() {
            if (!result.isDone() || !queue.isEmpty()) {
                return;
            }
            try {
                result.get();
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new IllegalStateException("interrupted while reading the job's rows", e);
            } catch (ExecutionException e) {
                throw new IllegalStateException("the job failed", e.getCause());
            }
            ended = true;  // finished: every row came (the markers are put before the writers finish)
        }

        @Override
        public Row next() {
            if (!hasNext()) {
                throw new NoSuchElementException();
            }
            Row row = next;
            next = null;
            return row;
        }

        @Override
        public void close() {
            System.getProperties().remove(PREFIX + name, queue);  // a writer still waiting gives up
            queue.clear();
            try {
                if (!result.isDone()) {
                    client.cancel().get();  // the reader stopped early: the job is not needed
                }
            } catch (Exception e) {  // the job and its cluster are gone already
                if (e instanceof InterruptedException) {
                    Thread.currentThread().interrupt();
                }
            }
        }
    }
}
