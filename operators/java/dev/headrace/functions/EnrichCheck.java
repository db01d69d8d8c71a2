package dev.headrace.functions;

import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.JsonNode;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.ObjectMapper;

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.math.BigDecimal;
import java.nio.charset.StandardCharsets;

/**
 * The JVM engine's value conversion, line by line, for {@code tests/unit/test_enrich_jvm.py} to
 * hold against Python's {@code convert()}: each stdin line is {@code [type, value]}, the value as a
 * store gives it (a JSON scalar; {@code {"decimal": "1.50"}} for a numeric column; {@code {"l2":
 * "<text>"}} for a value read back from L2), and each stdout line the converted value as JSON.
 * With arguments {@code key <field>}: each stdin line a record's text (a JSON string), each
 * stdout line the key EnrichPrefetch reads ahead from it ({@link Json#topLevelKey}), or null;
 * with {@code key <field> scan}, the byte scan's answer alone ({@code {"unsure": true}} where it
 * leaves the record to the parser); with {@code key <field> parser}, the parser's alone.
 * With arguments {@code l1 <capacity>}: each stdin line {@code store <key>} or {@code read <key>}
 * on one L1 segment; stdout has each read's answer, then the keys held, eldest first.
 */
public final class EnrichCheck {
    private EnrichCheck() {
    }

    public static void main(String[] args) throws Exception {
        ObjectMapper json = new ObjectMapper();
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        StringBuilder out = new StringBuilder();
        if (args.length >= 2 && "key".equals(args[0])) { // each line a record (a JSON string of its text)
            org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonFactory keys = Json.factory();
            boolean scanOnly = args.length == 3 && "scan".equals(args[2]);
            boolean parserOnly = args.length == 3 && "parser".equals(args[2]);
            for (String line = in.readLine(); line != null; line = in.readLine()) {
                byte[] record = json.readTree(line).asText().getBytes(StandardCharsets.UTF_8);
                if (scanOnly) { // the scan's own answer, or {"unsure": true} where it leaves the record to the parser
                    String scanned = Json.scannedKey(record, args[1]);
                    out.append(Json.isUnsure(scanned) ? "{\"unsure\": true}" : json.writeValueAsString(scanned));
                    out.append('\n');
                    continue;
                }
                String key = parserOnly ? Json.parsedKey(keys, record, args[1]) : Json.topLevelKey(keys, record, args[1]);
                out.append(json.writeValueAsString(key)).append('\n');
            }
            System.out.print(out);
            return;
        }
        if (args.length == 2 && "l1".equals(args[0])) {
            java.util.List<String> ops = new java.util.ArrayList<>();
            for (String line = in.readLine(); line != null; line = in.readLine()) {
                ops.add(line);
            }
            System.out.print(String.join("\n", EnrichLevels.segmentTrace(Integer.parseInt(args[1]), ops)) + "\n");
            return;
        }
        for (String line = in.readLine(); line != null; line = in.readLine()) {
            JsonNode item = json.readTree(line);
            JsonNode v = item.get(1);
            Object raw;
            if (v.has("decimal")) {
                raw = new BigDecimal(v.get("decimal").asText());
            } else if (v.has("l2")) {
                raw = EnrichLevels.decode(v.get("l2").asText().getBytes(StandardCharsets.UTF_8));
            } else if (v.has("written")) { // written to L2 by the JVM, read back
                Object value = v.get("written").has("decimal") ? new BigDecimal(v.get("written").get("decimal").asText())
                        : EnrichLevels.decode(v.get("written").toString().getBytes(StandardCharsets.UTF_8));
                raw = EnrichLevels.decode(EnrichLevels.toJson(value).getBytes(StandardCharsets.UTF_8));
            } else {
                raw = EnrichLevels.decode(v.toString().getBytes(StandardCharsets.UTF_8));
            }
            Object converted = EnrichLevels.convert(raw, item.get(0).asText().charAt(0));
            if (converted instanceof Double && !Double.isFinite((Double) converted)) {
                out.append(json.writeValueAsString(EnrichLevels.pyStr(converted))).append('\n');
            } else {
                out.append(json.writeValueAsString(converted)).append('\n');
            }
        }
        System.out.print(out);
    }
}
