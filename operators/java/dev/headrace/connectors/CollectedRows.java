package dev.headrace.connectors;

import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;

import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.ObjectMapper;
import org.apache.flink.types.Row;
import org.apache.flink.util.CloseableIterator;

/**
 * The rows of a collect sink, handed to Python in batches: one py4j call per batch instead of a
 * dozen per row (PyFlink's own iterator asks the JVM for each row, its kind and each field; at
 * ~0.5 ms a call the embedded run spent more time reading its results than running its job).
 *
 * <p>A daemon thread reads the iterator ahead into a bounded queue, so the job's results are
 * fetched while Python writes the previous batch. {@link #next(int, long)} returns a JSON array
 * of {@code [kind, field, ...]} rows, {@code kind} being {@link org.apache.flink.types.RowKind}'s
 * byte value, or {@code null} at the end; an error of the iterator (the job failed) is thrown
 * there, as the iterator threw it.
 */
public final class CollectedRows implements AutoCloseable {
    private static final ObjectMapper MAPPER = new ObjectMapper();
    private static final Object END = new Object();

    private final CloseableIterator<Row> rows;
    private final LinkedBlockingQueue<Object> queue;
    private final Thread reader;
    private volatile Throwable failure;
    private boolean ended;

    public CollectedRows(CloseableIterator<Row> rows, int capacity) {
        this.rows = rows;
        this.queue = new LinkedBlockingQueue<>(capacity);
        this.reader = new Thread(this::read, "headrace collected rows");
        reader.setDaemon(true);
        reader.start();
    }

    private void read() {
        try {
            while (rows.hasNext()) {
                queue.put(rows.next());
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            return;
        } catch (Throwable e) {
            failure = e;
        }
        try {
            queue.put(END);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    /**
     * Up to {@code max} rows as a JSON array; an empty one if none came within {@code waitMs};
     * {@code null} once every row was returned.
     */
    public String next(int max, long waitMs) throws Exception {
        if (ended) {
            rethrow();
            return null;
        }
        List<Object> batch = new ArrayList<>();
        Object first = queue.poll(waitMs, TimeUnit.MILLISECONDS);
        if (first != null) {
            batch.add(first);
            queue.drainTo(batch, max - 1);
        }
        List<Object[]> out = new ArrayList<>(batch.size());
        for (Object item : batch) {
            if (item == END) {
                ended = true;
                break;
            }
            Row row = (Row) item;
            Object[] fields = new Object[row.getArity() + 1];
            fields[0] = row.getKind().toByteValue();
            for (int i = 0; i < row.getArity(); i++) {
                Object value = row.getField(i);
                fields[i + 1] = value == null || value instanceof String || value instanceof Number
                        || value instanceof Boolean ? value : String.valueOf(value);
            }
            out.add(fields);
        }
        if (ended && out.isEmpty()) {
            rethrow();
            return null;
        }
        return MAPPER.writeValueAsString(out);
    }

    private void rethrow() throws Exception {
        Throwable e = failure;
        if (e instanceof Exception) {
            throw (Exception) e;
        }
        if (e instanceof Error) {
            throw (Error) e;
        }
    }

    @Override
    public void close() throws Exception {
        reader.interrupt();
        rows.close();
    }
}
