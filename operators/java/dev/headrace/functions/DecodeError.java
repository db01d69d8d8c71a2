package dev.headrace.functions;

/**
 * A binary record that cannot be decoded (Avro, Protobuf, the Confluent framing): the reason, and
 * the JSON Pointer of the field, which grows while the exception unwinds through nested values.
 * No stack trace: it is a verdict on a record, thrown once per bad record.
 */
final class DecodeError extends Exception {
    private static final long serialVersionUID = 1L;
    private final StringBuilder path = new StringBuilder();

    DecodeError(String message) {
        super(message, null, false, false);
    }

    DecodeError at(String segment) {
        path.insert(0, "/" + segment.replace("~", "~0").replace("/", "~1"));
        return this;
    }

    String pointer() {
        return path.length() == 0 ? "/" : path.toString();
    }
}
