package org.apache.kafka.clients.consumer;

import java.util.Iterator;

public class ConsumerRecords<K, V> implements Iterable<ConsumerRecord<K, V>> {
    @Override
    public Iterator<ConsumerRecord<K, V>> iterator() {
        throw new UnsupportedOperationException("a compile-time stand-in");
    }
}
