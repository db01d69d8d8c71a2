package dev.headrace.functions;

import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.JsonNode;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.ObjectMapper;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.node.ObjectNode;
import org.apache.flink.table.functions.ScalarFunction;

import java.nio.charset.StandardCharsets;
import java.util.Map;

/**
 * {@code hr_mask_payload(payload, spec)}: the payload a dead letter or late record carries when the
 * job masks fields. A JSON object has its masked fields masked (by the same rules as the step);
 * any other payload is, by the spec's {@code unparseable}: {@code masked} (the default) replaced
 * by its length and its HMAC-SHA-256, {@code raw} kept, {@code omit} dropped (NULL).
 */
public final class MaskPayload extends ScalarFunction {
    private static final long serialVersionUID = 1L;
    private static final ObjectMapper MAPPER = new ObjectMapper();

    public String eval(String payload, String specJson) {
        if (payload == null) {
            return null;
        }
        Mask.Spec spec = Mask.spec(specJson);
        JsonNode root = null;
        try {
            root = MAPPER.readTree(payload);
        } catch (Exception e) {
            root = null;
        }
        if (root instanceof ObjectNode) {
            ObjectNode object = (ObjectNode) root;
            for (Map.Entry<String, String> field : spec.fields.entrySet()) {
                JsonNode value = object.get(field.getKey());
                if (value != null && !value.isNull()) {
                    String text = value.isValueNode() ? value.asText() : value.toString();
                    object.put(field.getKey(), Mask.apply(field.getValue(), text, spec.keyEnv));
                }
            }
            return object.toString();
        }
        switch (spec.unparseable) {
            case "raw":
                return payload;
            case "omit":
                return null;
            default:
                byte[] bytes = payload.getBytes(StandardCharsets.UTF_8);
                return "{\"masked_payload\":{\"bytes\":" + bytes.length + ",\"hmac_sha256\":\""
                        + Mask.hmac(Mask.key(spec.keyEnv), bytes) + "\"}}";
        }
    }
}
