package org.apache.kafka.clients.consumer;

public class OffsetAndMetadata {
}
