package dev.headrace.functions;

import org.apache.kafka.clients.consumer.ConsumerInterceptor;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.common.TopicPartition;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;

/**
 * The Kafka consumer's interceptor of a job whose enrich steps look up in the JVM, synchronously
 * ({@link EnrichGet}): each batch the consumer fetches is read here, in the source's fetcher
 * thread, before the task thread gets its records, and each record's key is handed to the step's
 * levels ({@link EnrichLevels#prefetch}). The batcher then looks up the keys L1 lacks while the
 * task works through the batch before, so a record's lookup finds its row in L1 instead of
 * waiting for a round trip to Redis or PostgreSQL.
 *
 * <p>Configured by consumer properties {@code headrace.prefetch.<step> = <job>\t<field>} (made by
 * {@code operators/enrich.py}): the key is the record's top-level JSON field, a string or an
 * integer, as the step's {@code CAST(key AS STRING)} gives it. It only warms L1: a record whose key
 * it misses or reads differently is looked up as before, so the results never depend on it.
 */
public final class EnrichPrefetch implements ConsumerInterceptor<byte[], byte[]> {
    static final String PREFIX = "headrace.prefetch.";

    private final List<String[]> steps = new ArrayList<>(1); // {job, step, field}
    // the consumer's own, used only on its fetcher thread
    private final org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonFactory json = Json.factory();

    @Override
    public void configure(Map<String, ?> configs) {
        for (Map.Entry<String, ?> e : configs.entrySet()) {
            if (e.getKey().startsWith(PREFIX) && e.getValue() != null) {
                String[] parts = e.getValue().toString().split("\t", 2);
                if (parts.length == 2) {
                    steps.add(new String[] {parts[0], e.getKey().substring(PREFIX.length()), parts[1]});
                }
            }
        }
    }

    @Override
    public ConsumerRecords<byte[], byte[]> onConsume(ConsumerRecords<byte[], byte[]> records) {
        for (String[] step : steps) {
            EnrichLevels levels = EnrichLevels.forStep(step[0], step[1]);
            if (levels == null) {
                continue;
            }
            for (ConsumerRecord<byte[], byte[]> record : records) {
                levels.prefetch(Json.topLevelKey(json, record.value(), step[2]));
            }
        }
        return records;
    }

    @Override
    public void onCommit(Map<TopicPartition, OffsetAndMetadata> offsets) {
    }

    @Override
    public void close() {
    }
}
