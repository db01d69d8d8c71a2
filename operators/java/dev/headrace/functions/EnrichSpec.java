package dev.headrace.functions;

import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.JsonNode;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.ObjectMapper;

import java.io.IOException;

/**
 * An enrich step's lookup as {@code operators/enrich.py} hands it to the JVM (a JSON text given to
 * the function's constructor, never SQL: it holds the stores' passwords).
 */
final class EnrichSpec {
    final String job;
    final String step;
    final String[] fieldNames;
    /** 's' string, 'i' integer, 'n' number, 'b' boolean. */
    final char[] fieldTypes;
    /** The record's nullable BIGINT/DOUBLE/BOOLEAN fields, carried through the lookup (see EnrichLookup). */
    final String[] carriedNames;
    final char[] carriedTypes;
    final boolean strict;
    final int l1Size;
    final long ttlMs;
    final long missTtlMs;
    final String l2Prefix;
    final long l2TtlMs;
    final long retryForMs;
    final String retryForText;
    final String statsDir;
    final String pgTable;
    final String pgKeyColumn;
    final String pgQuery;
    final String sourcePrefix;
    final String sourceWhere;
    final String pgHost;
    final int pgPort;
    final String pgDatabase;
    final String pgUser;
    final String pgPassword;
    final int pgConnectTimeout;
    private final JsonNode redis;

    private EnrichSpec(JsonNode s) {
        job = s.get("job").asText();
        step = s.get("step").asText();
        fieldNames = names(s.get("fields"));
        fieldTypes = types(s.get("fields"));
        carriedNames = names(s.path("carried"));
        carriedTypes = types(s.path("carried"));
        strict = s.get("strict").asBoolean();
        l1Size = s.get("l1_size").asInt();
        ttlMs = s.get("ttl_ms").asLong();
        missTtlMs = s.get("miss_ttl_ms").asLong();
        l2Prefix = text(s, "l2_prefix");
        l2TtlMs = s.path("l2_ttl_ms").asLong(0);
        retryForMs = s.get("retry_for_ms").asLong();
        retryForText = s.get("retry_for_text").asText();
        statsDir = text(s, "stats_dir");
        JsonNode source = s.get("source");
        pgTable = text(source, "table");
        pgKeyColumn = text(source, "key_column");
        pgQuery = text(source, "query");
        sourcePrefix = text(source, "prefix");
        JsonNode pg = s.path("postgres");
        pgHost = text(pg, "host");
        pgPort = pg.path("port").asInt(5432);
        pgDatabase = text(pg, "dbname");
        pgUser = text(pg, "user");
        pgPassword = text(pg, "password");
        pgConnectTimeout = pg.path("connect_timeout").asInt(5);
        redis = s.path("redis");
        sourceWhere = sourcePrefix != null ? "Redis at " + text(redis, "host") + ":" + redis.path("port").asInt()
                : "PostgreSQL at " + pgHost + ":" + pgPort;
    }

    static EnrichSpec parse(String text) {
        try {
            return new EnrichSpec(new ObjectMapper().readTree(text));
        } catch (IOException | RuntimeException e) { // never the text in the message: it holds passwords
            throw new IllegalArgumentException("the enrich step's spec is not what operators/enrich.py writes: "
                    + e.getClass().getSimpleName());
        }
    }

    /** The names of {@code [[name, type], …]}. */
    private static String[] names(JsonNode pairs) {
        String[] names = new String[pairs.size()];
        for (int i = 0; i < names.length; i++) {
            names[i] = pairs.get(i).get(0).asText();
        }
        return names;
    }

    /** The type codes of {@code [[name, type], …]}: 's', 'i', 'n' or 'b'. */
    private static char[] types(JsonNode pairs) {
        char[] types = new char[pairs.size()];
        for (int i = 0; i < types.length; i++) {
            types[i] = pairs.get(i).get(1).asText().charAt(0);
        }
        return types;
    }

    private static String text(JsonNode node, String name) {
        JsonNode value = node.get(name);
        return value == null || value.isNull() ? null : value.asText();
    }

    /** A connection to the profile's Redis (L2, or the source). */
    Resp redis() throws IOException {
        return new Resp(text(redis, "host"), redis.path("port").asInt(6379), redis.path("timeout_ms").asInt(5000),
                text(redis, "username"), text(redis, "password"), redis.path("db").asInt(0),
                redis.path("ssl").asBoolean(false));
    }
}
