package dev.headrace.functions;

import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.JsonNode;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.node.ArrayNode;

/**
 * The JVM validator's verdicts on instances of any JSON type (the record path takes objects only),
 * for the conformance test that runs JSON-Schema-Test-Suite through both engines.
 */
public final class SchemaProbe {
    private SchemaProbe() {
    }

    /**
     * {@code [true|false, ...]}, one per instance of the JSON array {@code instances}, or
     * {@code "refused: why"} when the schema is outside the JVM subset.
     */
    public static String verdicts(String schema, String instances) throws Exception {
        SchemaNode node;
        try {
            node = SchemaNode.compile(RecordCheck.MAPPER.readTree(schema), "#");
        } catch (IllegalArgumentException e) {
            return "refused: " + e.getMessage();
        }
        ArrayNode out = RecordCheck.MAPPER.createArrayNode();
        for (JsonNode instance : RecordCheck.MAPPER.readTree(instances)) {
            out.add(node.validate(instance, "") == null);
        }
        return out.toString();
    }
}
