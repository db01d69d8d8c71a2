package dev.headrace.functions;

import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.JsonNode;

import java.io.IOException;
import java.util.Iterator;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;

/** Avro ({@code operators/avro.py}): each writer schema resolved against the reader's once. */
final class AvroBody implements DecodeBinary.Body {
    private final AvroDecoder plain;
    private final Map<Integer, AvroDecoder> byId = new ConcurrentHashMap<>();
    private final Map<Integer, String> refused = new ConcurrentHashMap<>();
    private final AvroSchema reader;
    private final String[] names;
    private final char[] kinds;

    AvroBody(JsonNode root, String[] names, char[] kinds) {
        this.names = names;
        this.kinds = kinds;
        reader = AvroSchema.parse(root.get("reader"));
        if (reader.kind != AvroSchema.Kind.RECORD) {
            throw new IllegalArgumentException("hr_decode: the reader schema must be a record");
        }
        plain = new AvroDecoder(reader, reader, names, kinds);
        for (Iterator<Map.Entry<String, JsonNode>> it = root.path("writers").fields(); it.hasNext(); ) {
            Map.Entry<String, JsonNode> e = it.next();
            byId.put(Integer.parseInt(e.getKey()), new AvroDecoder(AvroSchema.parse(e.getValue()), reader,
                    names, kinds));
        }
    }

    @Override
    public boolean knows(int id) {
        return byId.containsKey(id) || refused.containsKey(id);
    }

    @Override
    public void add(int id, String schemaType, String schema) {
        if (!"AVRO".equals(schemaType)) {
            refused.put(id, "it is a " + schemaType + " schema, not Avro");
            return;
        }
        try {
            byId.put(id, new AvroDecoder(AvroSchema.parse(RecordCheck.MAPPER.readTree(schema)), reader, names,
                    kinds));
        } catch (IOException | RuntimeException e) {
            refused.put(id, "its schema cannot be parsed: " + e.getMessage());
        }
    }

    @Override
    public java.util.SortedSet<Integer> ids() {
        java.util.SortedSet<Integer> ids = new java.util.TreeSet<>(byId.keySet());
        ids.addAll(refused.keySet());
        return ids;
    }

    @Override
    public void decode(Integer id, byte[] data, int base, int from, int end, Object[] out) throws DecodeError {
        if (id != null && refused.containsKey(id)) {
            throw new DecodeError("schema id " + id + " cannot be read with the job's schema: " + refused.get(id));
        }
        AvroDecoder decoder = id == null ? plain : byId.get(id);
        if (decoder.problem != null) {
            throw new DecodeError("schema id " + id + " cannot be read with the job's schema: " + decoder.problem);
        }
        decoder.decode(data, base, from, end, out);
    }
}
