package dev.headrace.functions;

import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.JsonNode;

import java.io.IOException;
import java.net.URI;
import java.net.URLEncoder;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.Base64;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.atomic.AtomicBoolean;

/**
 * The run-time side of a source in the Confluent wire format: the writer schemas a job was
 * compiled with are refreshed from the registry every {@code refresh_ms} (in the background), and a
 * record naming an id the job does not know makes one lookup of the subject's versions; if the id
 * is still unknown its records are dead letters that say so, with no further lookup (when the
 * registry did not answer, it is asked again after 30 s, never once per record).
 *
 * <p>The spec carries the registry's URL and user; a password is read from the JVM's system
 * property {@code headrace.registry.password} or the environment's {@code HEADRACE_REGISTRY_PASSWORD}
 * (never from the spec, which Flink shows in operator names).
 */
final class RegistryLookup {
    /** What a format keeps of its writers: whether it knows an id, and how it takes a new one. */
    interface Writers {
        boolean knows(int id);

        void add(int id, String schemaType, String schema);
    }

    static final long RETRY_AFTER_ERROR_MS = 30_000;
    private static final ExecutorService BACKGROUND = Executors.newSingleThreadExecutor(r -> {
        Thread t = new Thread(r, "headrace-registry-refresh");
        t.setDaemon(true);
        return t;
    });

    private final String url;
    private final String subject;
    private final String authorization;
    private final long refreshMs;
    private final Map<Integer, Long> lookedUp = new ConcurrentHashMap<>();
    private final Set<Integer> failedLookups = ConcurrentHashMap.newKeySet();
    private final Set<Integer> fetchedVersions = ConcurrentHashMap.newKeySet();
    private final AtomicBoolean refreshing = new AtomicBoolean();
    private volatile long nextRefresh;
    private volatile String lastError;
    private volatile HttpClient http;

    private RegistryLookup(JsonNode registry, String subject) {
        this.url = registry.get("url").asText().replaceAll("/+$", "");
        this.subject = subject;
        this.refreshMs = registry.path("refresh_ms").asLong(300_000);
        String user = registry.path("username").asText("");
        String password = System.getProperty("headrace.registry.password", System.getenv("HEADRACE_REGISTRY_PASSWORD"));
        this.authorization = user.isEmpty() ? null : "Basic " + Base64.getEncoder().encodeToString(
                (user + ":" + (password == null ? "" : password)).getBytes(StandardCharsets.UTF_8));
        this.nextRefresh = System.currentTimeMillis() + refreshMs;
    }

    /** The spec's {@code registry} (with {@code wire: confluent}), or null for none. */
    static RegistryLookup of(JsonNode spec) {
        JsonNode registry = spec.get("registry");
        if (registry == null || !registry.hasNonNull("url")) {
            return null;
        }
        return new RegistryLookup(registry, spec.path("subject").asText(""));
    }

    /** Whether {@code writers} knows {@code id} after at most one lookup of the subject for it. */
    boolean lookUp(int id, Writers writers, long now) {
        synchronized (this) {
            if (writers.knows(id)) {
                return true;
            }
            Long at = lookedUp.get(id);
            if (at != null && (!failedLookups.contains(id) || now - at < RETRY_AFTER_ERROR_MS)) {
                return false;
            }
            lookedUp.put(id, now);
            try {
                fetch(writers);
                failedLookups.remove(id);
            } catch (IOException | RuntimeException e) {
                failedLookups.add(id);
                lastError = e.getMessage() == null ? e.toString() : e.getMessage();
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                failedLookups.add(id);
                lastError = "interrupted";
            }
            return writers.knows(id);
        }
    }

    /** The end of the unknown-id message: what the lookup found. */
    String note(int id) {
        if (failedLookups.contains(id)) {
            return "; the schema registry at " + url + " did not answer (" + lastError + "); asked again "
                    + RETRY_AFTER_ERROR_MS / 1000 + " s later";
        }
        return "; looked up in the schema registry at " + url + ": not a version of the subject";
    }

    /** Every {@code refresh_ms}, the subject's new versions, fetched in the background. */
    void maybeRefresh(Writers writers, long now) {
        if (now < nextRefresh || !refreshing.compareAndSet(false, true)) {
            return;
        }
        nextRefresh = now + refreshMs;
        BACKGROUND.execute(() -> {
            try {
                synchronized (this) {
                    fetch(writers);
                }
            } catch (IOException | RuntimeException e) {
                lastError = e.getMessage() == null ? e.toString() : e.getMessage();
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            } finally {
                refreshing.set(false);
            }
        });
    }

    private void fetch(Writers writers) throws IOException, InterruptedException {
        String base = "/subjects/" + URLEncoder.encode(subject, StandardCharsets.UTF_8).replace("+", "%20")
                + "/versions";
        JsonNode versions = get(base);
        if (versions == null) {
            return; // no such subject (yet)
        }
        for (JsonNode v : versions) {
            int number = v.asInt();
            if (fetchedVersions.contains(number)) {
                continue;
            }
            JsonNode entry = get(base + "/" + number);
            if (entry == null) {
                continue;
            }
            int id = entry.get("id").asInt();
            if (!writers.knows(id)) {
                writers.add(id, entry.path("schemaType").asText("AVRO"), entry.get("schema").asText());
            }
            fetchedVersions.add(number);
        }
    }

    /** The JSON body of {@code GET path}; null for 404. */
    private JsonNode get(String path) throws IOException, InterruptedException {
        if (http == null) {
            http = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(5)).build();
        }
        HttpRequest.Builder request = HttpRequest.newBuilder(URI.create(url + path)).timeout(Duration.ofSeconds(5))
                .header("Accept", "application/vnd.schemaregistry.v1+json");
        if (authorization != null) {
            request.header("Authorization", authorization);
        }
        HttpResponse<byte[]> response = http.send(request.GET().build(), HttpResponse.BodyHandlers.ofByteArray());
        if (response.statusCode() == 404) {
            return null;
        }
        if (response.statusCode() != 200) {
            throw new IOException("HTTP " + response.statusCode() + " for " + path);
        }
        return RecordCheck.MAPPER.readTree(response.body());
    }
}
