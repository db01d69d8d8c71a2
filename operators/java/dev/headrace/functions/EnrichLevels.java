package dev.headrace.functions;

import org.apache.flink.metrics.Counter;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.JsonNode;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.ObjectMapper;
import org.apache.flink.table.data.GenericRowData;
import org.apache.flink.table.data.RowData;
import org.apache.flink.table.data.StringData;
import org.apache.flink.table.data.binary.BinaryStringData;

import java.io.IOException;
import java.math.BigDecimal;
import java.math.BigInteger;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.nio.file.StandardCopyOption;
import java.sql.Array;
import java.sql.Connection;
import java.sql.Driver;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.ThreadLocalRandom;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.LongAdder;

/**
 * The enrich step's cache levels in the JVM, shared by every subtask of one step in one JVM (so
 * the subtasks of a TaskManager share one L1): L1 a bounded LRU with TTLs, in memory; the keys L1
 * does not know go to one batcher thread, which asks L2 (Redis hashes, pipelined) and then L3
 * (PostgreSQL, one {@code = ANY(?)} query per batch, or Redis hashes) for a batch at a time, and
 * completes the records' futures. The same semantics as {@code operators/lookup.py}: L2 that does
 * not answer is skipped and counted; L3 that does not answer is retried with backoff for
 * {@code retry_for}, then the records fail and the job restarts from its checkpoint.
 */
final class EnrichLevels {
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final Map<String, EnrichLevels> SHARED = new HashMap<>();
    /** The levels open in this JVM by job and step, for {@link EnrichPrefetch}. */
    private static final Map<String, EnrichLevels> BY_STEP = new java.util.concurrent.ConcurrentHashMap<>();
    /** What a cached row's first reader counts, when a prefetch put it there before any record asked. */
    private static final int CLAIMED = 0;
    private static final int FROM_L2 = 2;
    private static final int FROM_L3 = 3;
    private static final int MISSED = 4;
    private static final int MAX_BATCH = 2000;
    private static final Set<String> TRUE_WORDS = Set.of("true", "t", "1", "yes");

    /** A subtask's Flink counters of its records' answers, by level. */
    static final class Counters {
        final Counter l1;
        final Counter l2;
        final Counter l3;
        final Counter misses;

        Counters(Counter l1, Counter l2, Counter l3, Counter misses) {
            this.l1 = l1;
            this.l2 = l2;
            this.l3 = l3;
            this.misses = misses;
        }

        /** A lookup function's counters, in its subtask's metric group {@code headrace}. */
        static Counters of(org.apache.flink.table.functions.FunctionContext context) {
            org.apache.flink.metrics.MetricGroup group = context.getMetricGroup().addGroup("headrace");
            return new Counters(group.counter("enrich_l1_hits"), group.counter("enrich_l2_hits"),
                    group.counter("enrich_l3_hits"), group.counter("enrich_misses"));
        }
    }

    /** A key being looked up, with every record waiting for it. */
    private static final class Pending {
        final String key;
        final List<CompletableFuture<RowData>> waiting = new ArrayList<>(2);
        final List<RowData> carried = new ArrayList<>(2);
        /** Each waiting record's subtask counters: the first record counts the level that answers,
         * the others L1. Empty while only a prefetch asked. (Guarded by pending until answered.) */
        final List<Counters> counters = new ArrayList<>(2);

        Pending(String key) {
            this.key = key;
        }

        void add(CompletableFuture<RowData> future, RowData fields, Counters by) {
            waiting.add(future);
            carried.add(fields);
            counters.add(by);
        }
    }

    private static final class Cached {
        final RowData row;
        final long expires;
        /** The level its first reader counts (FROM_L2, FROM_L3, MISSED) when a prefetch fetched it
         * before any record asked, else CLAIMED: an L1 hit (guarded by its segment). */
        int level;
        /** Read by a record since it came or was last passed over (guarded by its segment). */
        boolean used;

        Cached(RowData row, long expires, int level) {
            this.row = row;
            this.expires = expires;
            this.level = level;
        }
    }

    /**
     * One segment of L1, synchronized (two task threads and the batcher): least recently used
     * first, approximated by a second chance. Entries stay in the order they came; a record's read
     * only marks its entry {@link Cached#used}. When the segment is full, the eldest entry goes,
     * unless it was read since it came or was last passed over: then it moves to the end, unmarked.
     * A read thus writes one boolean instead of relinking the entry at the end of the map, which
     * touched two more entries per record and dirtied the old generation's cards for the GC.
     */
    private static final class Segment extends LinkedHashMap<String, Cached> {
        private static final long serialVersionUID = 1L;
        private final int capacity;

        Segment(int capacity) {
            super(Math.min(capacity, 1 << 16), 0.75f, false);
            this.capacity = capacity;
        }

        /** A record's read of the key: its live entry, marked as used, or null. */
        Cached read(String key, long now) {
            Cached entry = get(key);
            if (entry == null || entry.expires - now <= 0) {
                return null;
            }
            entry.used = true;
            return entry;
        }

        /** A new entry for the key, at the end; the eldest unused entries make room. */
        void store(String key, Cached entry) {
            remove(key);
            put(key, entry);
            while (size() > capacity) {
                Iterator<Map.Entry<String, Cached>> eldest = entrySet().iterator();
                Map.Entry<String, Cached> first = eldest.next();
                Cached value = first.getValue();
                eldest.remove();
                if (value == entry || value.used) { // the newest stays; a read entry gets a second chance
                    value.used = false;
                    put(first.getKey(), value);
                }
            }
        }
    }

    /**
     * For {@code EnrichCheck}: one L1 segment of {@code capacity} entries put through {@code ops}
     * ({@code "store k"} or {@code "read k"}), answering each read ("hit" or "miss"), then the
     * keys it holds, eldest first.
     */
    static List<String> segmentTrace(int capacity, List<String> ops) {
        Segment segment = new Segment(capacity);
        List<String> out = new ArrayList<>();
        long now = System.nanoTime();
        for (String op : ops) {
            String[] parts = op.split(" ", 2);
            if ("store".equals(parts[0])) {
                segment.store(parts[1], new Cached(null, now + TimeUnit.HOURS.toNanos(1), CLAIMED));
            } else {
                out.add(segment.read(parts[1], now) != null ? "hit" : "miss");
            }
        }
        out.add(String.join(",", segment.keySet()));
        return out;
    }

    final EnrichSpec spec;
    private final String id;
    private final Segment[] l1;
    private final long ttlNanos;
    private final long missTtlNanos;
    private final RowData notFound;
    private final Map<String, Pending> pending = new HashMap<>();
    private final LinkedBlockingQueue<Pending> queue = new LinkedBlockingQueue<>();
    private final Thread batcher;
    private volatile boolean closed;
    private int users;

    // what the lookups did, written as LookupStats JSON (operators/lookup.py) for `headrace run`
    private final LongAdder keys = new LongAdder();
    private final LongAdder l1Hits = new LongAdder();
    private final AtomicLong l2Hits = new AtomicLong();
    private final AtomicLong l3Hits = new AtomicLong();
    private final AtomicLong misses = new AtomicLong();
    private final AtomicLong l2Errors = new AtomicLong();
    private final AtomicLong batches = new AtomicLong();
    private final LongAdder readAhead = new LongAdder();
    private final LongAdder waited = new LongAdder();
    private final ArrayDeque<Double> batchMs = new ArrayDeque<>();
    private final Path statsFile;
    // what the stats file last held (written by the batcher thread, then by release())
    private String written;

    private Resp l2;
    private Resp redisSource;
    private Connection pg;
    private PreparedStatement statement;
    private boolean integerKey;

    private EnrichLevels(EnrichSpec spec, String id) {
        this.spec = spec;
        this.id = id;
        int segments = spec.l1Size >= 4096 ? 16 : 1;
        l1 = new Segment[segments];
        for (int i = 0; i < segments; i++) {
            l1[i] = new Segment(Math.max(1, spec.l1Size / segments));
        }
        ttlNanos = TimeUnit.MILLISECONDS.toNanos(spec.ttlMs);
        missTtlNanos = TimeUnit.MILLISECONDS.toNanos(spec.missTtlMs);
        GenericRowData none = new GenericRowData(spec.fieldNames.length + 1);
        none.setField(0, false);
        notFound = none;
        String instance = "jvm-" + ProcessHandle.current().pid() + "-"
                + Long.toHexString(ThreadLocalRandom.current().nextLong() & 0xffffffffL);
        statsFile = Paths.get(spec.statsDir, spec.job + "." + spec.step + "." + instance + ".json");
        batcher = new Thread(this::run, "headrace-enrich-" + spec.step);
        batcher.setDaemon(true);
        batcher.start();
    }

    /** The levels of this step in this JVM, opened by the first subtask. */
    static EnrichLevels acquire(String specText) {
        synchronized (SHARED) {
            EnrichLevels levels = SHARED.get(specText);
            if (levels == null) {
                levels = new EnrichLevels(EnrichSpec.parse(specText), specText);
                SHARED.put(specText, levels);
            }
            levels.users++;
            BY_STEP.put(stepKey(levels.spec.job, levels.spec.step), levels);
            return levels;
        }
    }

    /** The last subtask to leave stops the batcher and closes the connections. */
    void release() {
        synchronized (SHARED) {
            if (--users > 0) {
                return;
            }
            SHARED.remove(id);
            BY_STEP.remove(stepKey(spec.job, spec.step), this);
        }
        closed = true;
        batcher.interrupt();
        try {
            batcher.join(10_000);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        writeStats();
    }

    private static String stepKey(String job, String step) {
        return job + '\u0000' + step;
    }

    /** The open levels of a job's step in this JVM, or null (see EnrichPrefetch). */
    static EnrichLevels forStep(String job, String step) {
        return BY_STEP.get(stepKey(job, step));
    }

    /**
     * A record's key seen ahead of the record (by the Kafka consumer, {@link EnrichPrefetch}): when
     * L1 lacks it and no lookup of it is under way, the batcher is asked for it now, so that the
     * record finds it in L1. Nothing is counted until a record asks: the first record to read the
     * row counts the level it came from, as if it had asked itself.
     */
    void prefetch(String key) {
        if (key == null || closed) {
            return;
        }
        Segment segment = segment(key);
        Cached entry;
        synchronized (segment) {
            entry = segment.get(key);
        }
        if (entry != null && entry.expires - System.nanoTime() > 0) {
            return;
        }
        synchronized (pending) {
            if (!pending.containsKey(key)) {
                readAhead.increment();
                Pending asked = new Pending(key);
                pending.put(key, asked);
                queue.add(asked);
            }
        }
    }

    /** A record's lookup, answered on the calling thread: from L1, or after waiting for its batch. */
    RowData get(String key, Counters counters) {
        RowData now = key == null ? notFound : fromL1(key, counters);
        if (now != null) { // most records: no future to make
            return now;
        }
        CompletableFuture<RowData> answer = new CompletableFuture<>();
        await(key, answer, counters, null);
        if (!answer.isDone()) {
            waited.increment();
        }
        try {
            return answer.get();
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IllegalStateException("the enrich step '" + spec.step + "' was interrupted", e);
        } catch (java.util.concurrent.ExecutionException e) {
            Throwable cause = e.getCause();
            throw cause instanceof RuntimeException ? (RuntimeException) cause : new IllegalStateException(cause);
        }
    }

    /** A copy of a record's carried fields (the caller may reuse its row for the next record). */
    RowData copyCarried(RowData carried) {
        char[] types = spec.carriedTypes;
        GenericRowData copy = new GenericRowData(types.length);
        for (int i = 0; i < types.length && carried != null; i++) {
            if (!carried.isNullAt(i)) {
                copy.setField(i, types[i] == 'i' ? (Object) carried.getLong(i)
                        : types[i] == 'n' ? (Object) carried.getDouble(i) : (Object) carried.getBoolean(i));
            }
        }
        return copy;
    }

    /** The answer for one record: the cached row, with the record's carried fields when it has some. */
    private static RowData withCarried(RowData answer, RowData carried) {
        if (carried == null) {
            return answer;
        }
        GenericRowData cached = (GenericRowData) answer;
        int n = cached.getArity();
        GenericRowData out = new GenericRowData(n + 1);
        for (int i = 0; i < n; i++) {
            out.setField(i, cached.getField(i));
        }
        out.setField(n, carried);
        return out;
    }

    /** A record's lookup: answered now from L1, or when its key's batch is done. */
    void lookup(String key, CompletableFuture<RowData> future, Counters counters, RowData carried) {
        if (key == null) {
            future.complete(withCarried(notFound, carried));
            return;
        }
        RowData cached = fromL1(key, counters);
        if (cached != null) {
            future.complete(withCarried(cached, carried));
            return;
        }
        await(key, future, counters, carried);
    }

    /** A key L1 did not have: the record joins its key's lookup under way, or starts one. */
    private void await(String key, CompletableFuture<RowData> future, Counters counters, RowData carried) {
        synchronized (pending) {
            Pending asked = pending.get(key);
            if (asked != null) { // another lookup of this key is under way: answered with it
                asked.add(future, carried, counters);
                return;
            }
            asked = new Pending(key);
            asked.add(future, carried, counters);
            pending.put(key, asked);
            queue.add(asked);
        }
    }

    /** The row L1 holds for a record's key (counted: as an L1 hit, or at the level a prefetch
     * fetched it from when this record is its first reader), or null when L1 has none alive. */
    private RowData fromL1(String key, Counters counters) {
        Segment segment = segment(key);
        Cached entry;
        int level;
        long now = System.nanoTime();
        synchronized (segment) {
            entry = segment.read(key, now);
            if (entry == null) {
                return null;
            }
            level = entry.level;
            entry.level = CLAIMED;
        }
        count(level, counters);
        return entry.row;
    }

    /** A record's lookup answered, at the level that answered it. A lookup is counted when it is
     * answered, not when it is asked: one abandoned by a failover (the task cancelled while it
     * waited, its batch failed) is asked again after the restore and counted then, once. */
    private void count(int level, Counters counters) {
        keys.increment();
        switch (level) {
            case FROM_L2:
                l2Hits.incrementAndGet();
                counters.l2.inc();
                break;
            case FROM_L3:
                l3Hits.incrementAndGet();
                counters.l3.inc();
                break;
            case MISSED:
                misses.incrementAndGet();
                counters.misses.inc();
                break;
            default:
                l1Hits.increment();
                counters.l1.inc();
        }
    }

    /** A key's L1 segment, by the top bits of a multiplicative hash: the map inside the segment
     * buckets by the low bits, which would otherwise be the same for every key of a segment. */
    private Segment segment(String key) {
        return l1[l1.length == 1 ? 0 : (key.hashCode() * 0x9E3779B9) >>> 28];
    }

    private void run() {
        long lastStats = System.nanoTime();
        List<Pending> batch = new ArrayList<>(MAX_BATCH);
        while (!closed) {
            try {
                Pending first = queue.poll(200, TimeUnit.MILLISECONDS);
                if (first != null) {
                    batch.add(first);
                    queue.drainTo(batch, MAX_BATCH - 1);
                    answer(batch);
                    batch.clear();
                }
            } catch (InterruptedException e) {
                if (closed) {
                    break;
                }
            } catch (Throwable e) { // the records fail (the job restarts); the batcher lives on
                fail(batch, e);
                batch.clear();
            }
            if (System.nanoTime() - lastStats > 1_000_000_000L) {
                writeStats();
                lastStats = System.nanoTime();
            }
        }
        List<Pending> left = new ArrayList<>();
        queue.drainTo(left);
        fail(left, new IllegalStateException("the enrich step '" + spec.step + "' was closed"));
        closeConnections();
    }

    private void fail(List<Pending> batch, Throwable cause) {
        for (Pending p : batch) {
            synchronized (pending) {
                pending.remove(p.key);
            }
            for (CompletableFuture<RowData> f : p.waiting) {
                f.completeExceptionally(cause);
            }
        }
    }

    private void answer(List<Pending> batch) throws Exception {
        long started = System.nanoTime();
        List<String> wanted = new ArrayList<>(batch.size());
        for (Pending p : batch) {
            wanted.add(p.key);
        }
        Map<String, Object[]> found = new HashMap<>();
        if (spec.l2Prefix != null) {
            try {
                found = hashes(l2(), wanted, spec.l2Prefix, true);
            } catch (IOException e) { // a cache that does not answer is skipped: L3 has the data
                l2Errors.incrementAndGet();
                closeL2();
            }
        }
        List<String> rest = new ArrayList<>(wanted.size() - found.size());
        for (String k : wanted) {
            if (!found.containsKey(k)) {
                rest.add(k);
            }
        }
        Map<String, Object[]> fromL3 = rest.isEmpty() ? Map.of() : retried(rest);
        if (spec.l2Prefix != null && !fromL3.isEmpty()) {
            try {
                l2Store(fromL3);
            } catch (IOException e) {
                l2Errors.incrementAndGet();
                closeL2();
            }
        }
        long now = System.nanoTime();
        for (Pending p : batch) {
            Object[] raw = found.get(p.key);
            int level = FROM_L2;
            if (raw == null) {
                raw = fromL3.get(p.key);
                level = raw != null ? FROM_L3 : MISSED;
            }
            RowData row = raw == null ? notFound : row(raw);
            Segment segment = segment(p.key);
            Cached cached = new Cached(row, now + (raw != null ? ttlNanos : missTtlNanos), level);
            boolean asked;
            synchronized (segment) {
                synchronized (pending) {
                    pending.remove(p.key); // no record joins p after this
                    asked = !p.waiting.isEmpty();
                }
                if (asked) {
                    cached.level = CLAIMED; // counted below, for the records that asked
                }
                segment.store(p.key, cached);
            }
            for (int i = 0; i < p.waiting.size(); i++) {
                count(i == 0 ? level : CLAIMED, p.counters.get(i));
                p.waiting.get(i).complete(withCarried(row, p.carried.get(i)));
            }
        }
        batches.incrementAndGet();
        synchronized (batchMs) {
            batchMs.addLast((System.nanoTime() - started) / 1e6);
            if (batchMs.size() > 1000) {
                batchMs.removeFirst();
            }
        }
    }

    /** The output row: whether the key counts as found, then each field as its declared type. */
    private RowData row(Object[] raw) {
        GenericRowData row = new GenericRowData(raw.length + 1);
        boolean complete = true;
        for (int i = 0; i < raw.length; i++) {
            Object value = convert(raw[i], spec.fieldTypes[i]);
            complete &= value != null;
            row.setField(i + 1, value instanceof String ? text((String) value) : value);
        }
        // with on_miss keep, a row found is enough; otherwise every field must have a value
        row.setField(0, !spec.strict || complete);
        return row;
    }

    /** Flink's string, in its bytes already: both subtasks read a cached row, neither may write it. */
    private static StringData text(String value) {
        BinaryStringData data = BinaryStringData.fromString(value);
        data.ensureMaterialized();
        return data;
    }

    // ---- L3, retried -------------------------------------------------------------------------

    private Map<String, Object[]> retried(List<String> keys) throws Exception {
        long deadline = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(spec.retryForMs);
        double delay = 0.2;
        while (true) {
            try {
                return spec.pgTable != null || spec.pgQuery != null ? pgFetch(keys) : redisSourceFetch(keys);
            } catch (SQLException | IOException e) {
                if (!transient_(e)) {
                    throw e;
                }
                closeSource();
                if (closed || System.nanoTime() + (long) (delay * 1e9) - deadline > 0) {
                    String detail = e.getMessage() == null ? "" : e.getMessage().strip().split("\n", 2)[0];
                    throw new IOException(spec.sourceWhere + " did not answer for " + spec.retryForText + ": "
                            + e.getClass().getSimpleName() + ": " + detail);
                }
                Thread.sleep((long) (delay * 1000 * ThreadLocalRandom.current().nextDouble(0.5, 1.0)));
                delay = Math.min(delay * 2, 5.0);
            }
        }
    }

    private static boolean transient_(Exception e) {
        if (e instanceof Resp.ReplyError) {
            return false;
        }
        if (e instanceof SQLException) {
            String state = ((SQLException) e).getSQLState();
            return state == null || state.startsWith("08") || state.startsWith("57P") || e.getCause() instanceof IOException;
        }
        return true;
    }

    private Map<String, Object[]> pgFetch(List<String> keys) throws SQLException {
        if (pg == null || pg.isClosed()) {
            pg = connect();
            statement = null;
        }
        if (statement == null) {
            prepare();
        }
        List<String> asked = keys;
        if (integerKey) {
            asked = new ArrayList<>(keys.size());
            for (String k : keys) {
                if (isBigint(k)) {
                    asked.add(k);
                }
            }
        }
        Map<String, Object[]> rows = new HashMap<>();
        if (asked.isEmpty() && integerKey) {
            return rows;
        }
        Array array = pg.createArrayOf("text", asked.toArray());
        statement.setArray(1, array);
        try (ResultSet rs = statement.executeQuery()) {
            int n = spec.fieldNames.length;
            while (rs.next()) {
                Object[] raw = new Object[n];
                for (int i = 0; i < n; i++) {
                    Object value = rs.getObject(i + 2);
                    // text, numbers and booleans as they are (as psycopg gives them to the Python
                    // engine); any other type (a timestamp, json, …) as PostgreSQL writes it
                    raw[i] = value == null || value instanceof String || value instanceof Number
                            || value instanceof Boolean ? value : rs.getString(i + 2);
                }
                rows.put(rs.getString(1), raw);
            }
        }
        array.free();
        return rows;
    }

    private Connection connect() throws SQLException {
        Driver driver;
        try {
            driver = (Driver) Class.forName("org.postgresql.Driver", true, EnrichLevels.class.getClassLoader())
                    .getDeclaredConstructor().newInstance();
        } catch (ReflectiveOperationException e) {
            throw new SQLException("the PostgreSQL JDBC driver is not on the job's classpath", "HR000", e);
        }
        Properties props = new Properties();
        props.setProperty("user", spec.pgUser);
        if (spec.pgPassword != null) {
            props.setProperty("password", spec.pgPassword);
        }
        props.setProperty("connectTimeout", Integer.toString(spec.pgConnectTimeout));
        props.setProperty("socketTimeout", Long.toString(Math.max(30, spec.retryForMs / 1000)));
        props.setProperty("ApplicationName", "headrace-enrich");
        Connection c = driver.connect("jdbc:postgresql://" + spec.pgHost + ":" + spec.pgPort + "/" + spec.pgDatabase, props);
        c.setAutoCommit(true);
        return c;
    }

    /** The statement: a table's key compared in its own type (its index serves), or the query. */
    private void prepare() throws SQLException {
        if (spec.pgQuery != null) {
            statement = pg.prepareStatement(spec.pgQuery.replace("%(keys)s", "?").replace("%%", "%"));
            return;
        }
        String typname;
        StringBuilder quoted = new StringBuilder();
        for (String part : spec.pgTable.split("\\.")) {
            quoted.append(quoted.length() == 0 ? "" : ".").append('"').append(part).append('"');
        }
        try (PreparedStatement ps = pg.prepareStatement(
                "SELECT t.typname FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "
                        + "WHERE a.attrelid = ?::regclass AND a.attname = ? AND NOT a.attisdropped")) {
            ps.setString(1, quoted.toString());
            ps.setString(2, spec.pgKeyColumn);
            try (ResultSet rs = ps.executeQuery()) {
                if (!rs.next()) {
                    throw new SQLException("table " + spec.pgTable + " has no column " + spec.pgKeyColumn, "42703");
                }
                typname = rs.getString(1);
            }
        }
        integerKey = Set.of("int2", "int4", "int8").contains(typname);
        boolean asIs = integerKey || Set.of("text", "varchar", "bpchar").contains(typname);
        String key = '"' + spec.pgKeyColumn + '"';
        StringBuilder sql = new StringBuilder("SELECT ").append(key).append("::text");
        for (String f : spec.fieldNames) {
            sql.append(", \"").append(f).append('"');
        }
        sql.append(" FROM ").append(quoted).append(" WHERE ").append(asIs ? key : key + "::text")
                .append(" = ANY(CAST(? AS ").append(integerKey ? "bigint[]" : "text[]").append("))");
        statement = pg.prepareStatement(sql.toString());
    }

    /** Whether a key is an integer PostgreSQL's bigint holds, written as {@code bigint::text} writes it. */
    static boolean isBigint(String text) {
        String body = text.startsWith("-") ? text.substring(1) : text;
        if (body.isEmpty() || body.length() > 19 || (body.length() > 1 && body.charAt(0) == '0')) {
            return false;
        }
        for (int i = 0; i < body.length(); i++) {
            char c = body.charAt(i);
            if (c < '0' || c > '9') {
                return false;
            }
        }
        try {
            Long.parseLong(text);
            return true;
        } catch (NumberFormatException e) {
            return false;
        }
    }

    private Map<String, Object[]> redisSourceFetch(List<String> keys) throws IOException {
        if (redisSource == null) {
            redisSource = spec.redis();
        }
        return hashes(redisSource, keys, spec.sourcePrefix, false);
    }

    // ---- L2 ----------------------------------------------------------------------------------

    /** The L2 connection, opened when first needed (and again after an error closed it). */
    private Resp l2() throws IOException {
        if (l2 == null) {
            l2 = spec.redis();
        }
        return l2;
    }

    private Map<String, Object[]> hashes(Resp redis, List<String> keys, String prefix, boolean json) throws IOException {
        List<String[]> commands = new ArrayList<>(keys.size());
        for (String k : keys) {
            commands.add(new String[] {"HGETALL", prefix + k});
        }
        List<Object> replies = redis.pipeline(commands);
        Map<String, Object[]> found = new HashMap<>();
        for (int i = 0; i < keys.size(); i++) {
            Object reply = replies.get(i);
            if (reply instanceof Resp.ReplyError) {
                throw (Resp.ReplyError) reply;
            }
            List<?> pairs = (List<?>) reply;
            if (pairs == null || pairs.isEmpty()) {
                continue;
            }
            Map<String, byte[]> hash = new HashMap<>();
            for (Iterator<?> it = pairs.iterator(); it.hasNext(); ) {
                String field = new String((byte[]) it.next(), StandardCharsets.UTF_8);
                hash.put(field, (byte[]) it.next());
            }
            Object[] raw = new Object[spec.fieldNames.length];
            for (int f = 0; f < raw.length; f++) {
                byte[] value = hash.get(spec.fieldNames[f]);
                raw[f] = value == null ? null : json ? decode(value) : new String(value, StandardCharsets.UTF_8);
            }
            found.put(keys.get(i), raw);
        }
        return found;
    }

    /** Write-back: each row as the hash L2 reads (values as JSON), with the TTL. */
    private void l2Store(Map<String, Object[]> rows) throws IOException {
        List<String[]> commands = new ArrayList<>(rows.size() * 2);
        for (Map.Entry<String, Object[]> row : rows.entrySet()) {
            String[] hset = new String[2 + 2 * spec.fieldNames.length];
            hset[0] = "HSET";
            hset[1] = spec.l2Prefix + row.getKey();
            for (int f = 0; f < spec.fieldNames.length; f++) {
                hset[2 + 2 * f] = spec.fieldNames[f];
                hset[3 + 2 * f] = toJson(row.getValue()[f]);
            }
            commands.add(hset);
            if (spec.l2TtlMs > 0) {
                commands.add(new String[] {"PEXPIRE", hset[1], Long.toString(spec.l2TtlMs)});
            }
        }
        for (Object reply : l2().pipeline(commands)) {
            if (reply instanceof Resp.ReplyError) {
                throw (Resp.ReplyError) reply;
            }
        }
    }

    static Object decode(byte[] raw) {
        String text = new String(raw, StandardCharsets.UTF_8);
        try {
            JsonNode node = JSON.readTree(text);
            if (node == null || node.isMissingNode() || node.isNull()) {
                return node == null || node.isMissingNode() ? text : null;
            }
            if (node.isTextual()) {
                return node.textValue();
            }
            if (node.isBoolean()) {
                return node.booleanValue();
            }
            if (node.isIntegralNumber()) {
                return node.bigIntegerValue();
            }
            if (node.isNumber()) {
                return node.doubleValue();
            }
            return node.toString();
        } catch (IOException e) {
            return text;
        }
    }

    static String toJson(Object value) {
        if (value == null) {
            return "null";
        }
        if (value instanceof Boolean || value instanceof Long || value instanceof Integer || value instanceof Short
                || value instanceof BigInteger) {
            return value.toString();
        }
        if (value instanceof BigDecimal) {
            return ((BigDecimal) value).toString();
        }
        if (value instanceof Double || value instanceof Float) {
            double d = ((Number) value).doubleValue();
            return Double.isFinite(d) ? Double.toString(d) : Double.isNaN(d) ? "NaN" : d > 0 ? "Infinity" : "-Infinity";
        }
        try {
            return JSON.writeValueAsString(value.toString());
        } catch (IOException e) {
            throw new IllegalStateException(e);
        }
    }

    // ---- conversion (operators/enrich.py convert(), as Python's int/float/str do it) ---------

    static Object convert(Object value, char type) {
        if (value == null) {
            return null;
        }
        switch (type) {
            case 'i':
                return toLong(value);
            case 'n':
                return toDouble(value);
            case 'b':
                return value instanceof Boolean ? value : TRUE_WORDS.contains(pyStr(value).toLowerCase(Locale.ROOT));
            default:
                return pyStr(value);
        }
    }

    private static Long toLong(Object value) {
        if (value instanceof Boolean) {
            return (Boolean) value ? 1L : 0L;
        }
        if (value instanceof Integer || value instanceof Long || value instanceof Short || value instanceof Byte) {
            return ((Number) value).longValue();
        }
        if (value instanceof BigInteger) {
            BigInteger b = (BigInteger) value;
            return b.bitLength() < 64 ? b.longValue() : null;
        }
        if (value instanceof BigDecimal) {
            BigInteger b = ((BigDecimal) value).toBigInteger();
            return b.bitLength() < 64 ? b.longValue() : null;
        }
        if (value instanceof Number) {
            double d = ((Number) value).doubleValue();
            return Double.isFinite(d) && Math.abs(d) < 9.2e18 ? (long) d : null;
        }
        String text = digitsOnly(value.toString().strip());
        try {
            return text == null ? null : Long.parseLong(text);
        } catch (NumberFormatException e) {
            return null;
        }
    }

    private static Double toDouble(Object value) {
        if (value instanceof Boolean) {
            return (Boolean) value ? 1.0 : 0.0;
        }
        if (value instanceof Number) {
            return ((Number) value).doubleValue();
        }
        String text = digitsOnly(value.toString().strip().toLowerCase(Locale.ROOT));
        if (text == null) {
            return null;
        }
        String unsigned = text.startsWith("+") || text.startsWith("-") ? text.substring(1) : text;
        if (unsigned.equals("inf") || unsigned.equals("infinity")) {
            return text.startsWith("-") ? Double.NEGATIVE_INFINITY : Double.POSITIVE_INFINITY;
        }
        if (unsigned.equals("nan")) {
            return Double.NaN;
        }
        if (unsigned.isEmpty() || !Character.isDigit(unsigned.charAt(unsigned.length() - 1)) && unsigned.charAt(unsigned.length() - 1) != '.'
                || unsigned.startsWith("0x")) {
            return null;
        }
        try {
            return Double.parseDouble(text);
        } catch (NumberFormatException e) {
            return null;
        }
    }

    /** The text without the underscores Python allows between two digits; null if one is elsewhere. */
    private static String digitsOnly(String text) {
        if (text.indexOf('_') < 0) {
            return text;
        }
        StringBuilder kept = new StringBuilder(text.length());
        for (int i = 0; i < text.length(); i++) {
            char c = text.charAt(i);
            if (c != '_') {
                kept.append(c);
            } else if (i == 0 || i == text.length() - 1 || !Character.isDigit(text.charAt(i - 1))
                    || !Character.isDigit(text.charAt(i + 1))) {
                return null;
            }
        }
        return kept.toString();
    }

    /** {@code str(value)} as Python writes it, for the types a store returns. */
    static String pyStr(Object value) {
        if (value instanceof String) {
            return (String) value;
        }
        if (value instanceof Boolean) {
            return (Boolean) value ? "True" : "False";
        }
        if (value instanceof Double || value instanceof Float) {
            return pyRepr(((Number) value).doubleValue());
        }
        return value.toString();
    }

    /** {@code repr(float)} of Python: the shortest digits that read back as the same double. */
    static String pyRepr(double d) {
        if (Double.isNaN(d)) {
            return "nan";
        }
        if (Double.isInfinite(d)) {
            return d > 0 ? "inf" : "-inf";
        }
        if (d == 0) {
            return (1 / d < 0) ? "-0.0" : "0.0";
        }
        BigDecimal exact = new BigDecimal(d);
        BigDecimal shortest = exact;
        for (int digits = 1; digits <= 17; digits++) { // the exact value correctly rounded, as Python does
            shortest = exact.round(new java.math.MathContext(digits, java.math.RoundingMode.HALF_EVEN));
            if (shortest.doubleValue() == d) {
                break;
            }
        }
        shortest = shortest.stripTrailingZeros();
        int exp = shortest.precision() - shortest.scale() - 1;
        if (exp >= -4 && exp < 16) { // Python writes these positionally
            String plain = shortest.toPlainString();
            return plain.indexOf('.') < 0 ? plain + ".0" : plain;
        }
        String digits = shortest.unscaledValue().abs().toString();
        String mantissa = (d < 0 ? "-" : "") + digits.charAt(0) + (digits.length() > 1 ? "." + digits.substring(1) : "");
        return mantissa + "e" + (exp < 0 ? "-" : "+") + (Math.abs(exp) < 10 ? "0" : "") + Math.abs(exp);
    }

    // ---- stats and connections ---------------------------------------------------------------

    private void writeStats() {
        long asked = keys.sum();
        long answered = batches.get();
        // the counts are read one after another while lookups go on, so a periodic write can catch
        // a record between two of them: only unchanged counts are skipped (an idle step does not
        // rewrite its file; the batch latencies change only with the batches), and the last write,
        // when no lookup runs, is whole
        String counts = "{\"keys\": " + asked + ", \"l1_hits\": " + l1Hits.sum() + ", \"l2_hits\": " + l2Hits.get()
                + ", \"l3_hits\": " + l3Hits.get() + ", \"misses\": " + misses.get() + ", \"l2_errors\": "
                + l2Errors.get() + ", \"batches\": " + answered + ", \"read_ahead\": " + readAhead.sum()
                + ", \"waited\": " + waited.sum();
        if (counts.equals(written)) {
            return;
        }
        written = counts;
        StringBuilder ms = new StringBuilder();
        synchronized (batchMs) {
            for (Double d : batchMs) {
                ms.append(ms.length() == 0 ? "" : ", ").append(String.format(Locale.ROOT, "%.3f", d));
            }
        }
        String json = counts + ", \"batch_ms\": [" + ms
                + "], \"l1_loaded\": 0, \"first_batch_keys\": 0, \"first_batch_l1_hits\": 0}";
        try {
            Files.createDirectories(statsFile.getParent());
            Path partial = statsFile.resolveSibling(statsFile.getFileName() + ".part");
            Files.write(partial, json.getBytes(StandardCharsets.UTF_8));
            Files.move(partial, statsFile, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
        } catch (IOException e) {
            // the counts are a report; the Flink counters have them too
        }
    }

    private void closeL2() {
        if (l2 != null) {
            l2.close();
            l2 = null;
        }
    }

    private void closeSource() {
        if (redisSource != null) {
            redisSource.close();
            redisSource = null;
        }
        if (pg != null) {
            try {
                pg.close();
            } catch (SQLException ignored) {
                // a broken connection: reconnect next time
            }
            pg = null;
            statement = null;
        }
    }

    private void closeConnections() {
        closeL2();
        closeSource();
    }
}
