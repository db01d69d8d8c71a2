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
 * <p>A daemon thread reads the iterator ahead into a queue bounded by size, so the job's results
 * are fetched while Python writes the previous batch. {@link #next(int, long)} returns a JSON array
 * of {@code [kind, field, ...]} rows, {@code kind} being {@link org.apache.flink.types.RowKind}'s
 * byte value, or {@code null} at the end; an error of the iterator (the job failed) is thrown
 * there, as the iterator threw it.
 */
public final class CollectedRows implements AutoCloseable {
    private static final ObjectMapper MAPPER = new ObjectMapper();
    private static final Object END = new Object();
    /** About 8 MB of UTF-16 per batch, however many rows. */
    private static final long MAX_CHARS = 4_000_000;
    /** The rows read ahead: about 32 MB of UTF-16 at most (a row larger than that still passes). */
    private static final long MAX_QUEUED_CHARS = 16_000_000;

    private final CloseableIterator<Row> rows;
    private final LinkedBlockingQueue<Object> queue;
    private final Thread reader;
    private volatile Throwable failure;
    private long queued;
    private boolean ended;

    public CollectedRows(CloseableIterator<Row> rows) {
        this.rows = rows;
        this.queue = new LinkedBlockingQueue<>();
        this.reader = new Thread(this::read, "headrace collected rows");
        reader.setDaemon(true);
        reader.start();
    }

    private void read() {
        try {
            while (rows.hasNext()) {
                Row row = rows.next();
                long chars = size(row);
                synchronized (this) {
                    while (queued > MAX_QUEUED_CHARS && !queue.isEmpty()) {
                        wait();
                    }
                    queued += chars;
                }
                queue.put(row);
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
        Object item = queue.poll(waitMs, TimeUnit.MILLISECONDS);
        long chars = 0;
        while (item != null) {
            batch.add(item);
            chars += size(item);
            // a batch is one string in both processes: dead letters carry payloads of up to 100,000
            // characters, so it is bounded by size as well as by rows
            if (item == END || batch.size() >= max || chars >= MAX_CHARS) {
                break;
            }
            item = queue.poll();
        }
        synchronized (this) {
            queued -= chars;
            notifyAll();
        }
        List<Object[]> out = new ArrayList<>(batch.size());
        for (Object taken : batch) {
            if (taken == END) {
                ended = true;
                break;
            }
            Row row = (Row) taken;
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

    private static long size(Object item) {
        if (!(item instanceof Row)) {
            return 0;
        }
        Row row = (Row) item;
        long chars = 8;
        for (int i = 0; i < row.getArity(); i++) {
            Object value = row.getField(i);
            chars += value instanceof String ? ((String) value).length() : 8;
        }
        return chars;
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
