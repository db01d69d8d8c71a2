package org.apache.kafka.clients.consumer;

public class ConsumerRecord<K, V> {
    public V value() {
        throw new UnsupportedOperationException("a compile-time stand-in");
    }
}
