package org.apache.kafka.common;

public final class TopicPartition {
}
