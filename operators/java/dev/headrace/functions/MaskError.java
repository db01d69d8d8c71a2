package dev.headrace.functions;

import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.JsonNode;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.ObjectMapper;
import org.apache.flink.table.functions.ScalarFunction;

import java.util.Map;

/**
 * {@code hr_mask_error(error, payload, spec)}: an error text without the clear values of masked
 * fields. Validators quote the values they refuse, so each masked field's value in the record is
 * replaced by {@code ***}; when the record cannot be parsed, only the error's kind (the text before
 * its first colon) is kept, as the parser's message may quote any part of it.
 */
public final class MaskError extends ScalarFunction {
    private static final long serialVersionUID = 1L;
    private static final ObjectMapper MAPPER = new ObjectMapper();

    public String eval(String error, String payload, String specJson) {
        if (error == null) {
            return null;
        }
        Mask.Spec spec = Mask.spec(specJson);
        JsonNode root;
        try {
            root = payload == null ? null : MAPPER.readTree(payload);
        } catch (Exception e) {
            root = null;
        }
        if (root == null || !root.isObject()) {
            int colon = error.indexOf(':');
            return (colon < 0 ? error : error.substring(0, colon)) + ": (details masked)";
        }
        String masked = error;
        for (Map.Entry<String, String> field : spec.fields.entrySet()) {
            JsonNode value = root.get(field.getKey());
            if (value != null && !value.isNull()) {
                String text = value.isValueNode() ? value.asText() : value.toString();
                if (!text.isEmpty()) {
                    masked = masked.replace(text, "***");
                    try { // as the validator may quote it: JSON-escaped
                        String quoted = MAPPER.writeValueAsString(text);
                        masked = masked.replace(quoted.substring(1, quoted.length() - 1), "***");
                    } catch (Exception e) {
                        // a String always serializes
                    }
                }
            }
        }
        return masked;
    }
}
