package dev.headrace.functions;

import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.JsonNode;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.ObjectMapper;

import java.nio.charset.StandardCharsets;
import java.security.InvalidKeyException;
import java.security.NoSuchAlgorithmException;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.regex.Pattern;
import javax.crypto.Mac;
import javax.crypto.spec.SecretKeySpec;

/**
 * The masking rules of the {@code mask} step, shared by the functions that mask fields
 * ({@link MaskValue}), dead-letter payloads ({@link MaskPayload}) and error texts
 * ({@link MaskError}), so that one value is masked the same way wherever it goes.
 *
 * <p>{@code hash} is HMAC-SHA-256 (hex) under a key read from an environment variable of the
 * process running the task (never from the job spec or the plan); {@code redact} replaces the
 * value; {@code truncate_ip} keeps an IPv4 address's /24 or an IPv6 address's /48 (anything else
 * is redacted); {@code keep_last:N} stars all but the last N characters (all of them when the
 * value is not longer than N); {@code email_domain} keeps {@code @domain}.
 */
final class Mask {
    static final String REDACTED = "[redacted]";
    private static final ObjectMapper MAPPER = new ObjectMapper();
    private static final Map<String, byte[]> KEYS = new ConcurrentHashMap<>();
    private static final Map<String, Spec> SPECS = new ConcurrentHashMap<>();
    private static final Pattern IPV4 = Pattern.compile("^(\\d{1,3})\\.(\\d{1,3})\\.(\\d{1,3})\\.(\\d{1,3})$");
    private static final Pattern IPV6 = Pattern.compile("^[0-9A-Fa-f:]+$");
    private static final char[] HEX = "0123456789abcdef".toCharArray();

    private Mask() {
    }

    /** The fields a job masks, with their rules, and what to do with a payload that cannot be parsed. */
    static final class Spec {
        final Map<String, String> fields = new LinkedHashMap<>();
        String unparseable = "masked";
        String keyEnv = "HEADRACE_MASK_KEY";
    }

    static Spec spec(String json) {
        return SPECS.computeIfAbsent(json, text -> {
            try {
                JsonNode root = MAPPER.readTree(text);
                Spec spec = new Spec();
                root.get("fields").fields().forEachRemaining(e -> spec.fields.put(e.getKey(), e.getValue().asText()));
                spec.unparseable = root.path("unparseable").asText("masked");
                spec.keyEnv = root.path("key_env").asText("HEADRACE_MASK_KEY");
                return spec;
            } catch (Exception e) {
                throw new IllegalArgumentException("mask spec is not JSON: " + e.getMessage());
            }
        });
    }

    static byte[] key(String env) {
        return KEYS.computeIfAbsent(env, name -> {
            String value = System.getenv(name);
            if (value == null || value.length() < 16) {
                throw new IllegalStateException("the mask step's key: environment variable " + name
                        + (value == null ? " is not set" : " is shorter than 16 characters")
                        + " in the process running this task (set it where Flink's TaskManagers start)");
            }
            return value.getBytes(StandardCharsets.UTF_8);
        });
    }

    static String apply(String rule, String value, String keyEnv) {
        if (value == null) {
            return null;
        }
        switch (rule) {
            case "hash":
                return hmac(key(keyEnv), value.getBytes(StandardCharsets.UTF_8));
            case "redact":
                return REDACTED;
            case "truncate_ip":
                return truncateIp(value);
            case "email_domain": {
                int at = value.lastIndexOf('@');
                return at < 0 || at == value.length() - 1 ? REDACTED : value.substring(at);
            }
            default:
                if (rule.startsWith("keep_last:")) {
                    return keepLast(value, Integer.parseInt(rule.substring("keep_last:".length())));
                }
                throw new IllegalArgumentException("unknown mask rule " + rule);
        }
    }

    static String hmac(byte[] key, byte[] data) {
        try {
            Mac mac = Mac.getInstance("HmacSHA256");
            mac.init(new SecretKeySpec(key, "HmacSHA256"));
            byte[] digest = mac.doFinal(data);
            char[] out = new char[digest.length * 2];
            for (int i = 0; i < digest.length; i++) {
                out[2 * i] = HEX[(digest[i] >> 4) & 0xF];
                out[2 * i + 1] = HEX[digest[i] & 0xF];
            }
            return new String(out);
        } catch (NoSuchAlgorithmException | InvalidKeyException e) {
            throw new IllegalStateException(e);
        }
    }

    static String keepLast(String value, int n) {
        int length = value.codePointCount(0, value.length());
        if (length <= n) {
            return "*".repeat(length);
        }
        int cut = value.offsetByCodePoints(0, length - n);
        return "*".repeat(length - n) + value.substring(cut);
    }

    static String truncateIp(String value) {
        java.util.regex.Matcher v4 = IPV4.matcher(value);
        if (v4.matches()) {
            for (int i = 1; i <= 4; i++) {
                if (Integer.parseInt(v4.group(i)) > 255) {
                    return REDACTED;
                }
            }
            return v4.group(1) + "." + v4.group(2) + "." + v4.group(3) + ".0";
        }
        if (value.indexOf(':') >= 0 && IPV6.matcher(value).matches()) {
            int[] groups = ipv6Groups(value);
            if (groups != null) {
                return Integer.toHexString(groups[0]) + ":" + Integer.toHexString(groups[1]) + ":"
                        + Integer.toHexString(groups[2]) + "::";
            }
        }
        return REDACTED;
    }

    /** The eight 16-bit groups of an IPv6 literal (with at most one "::"), or null. */
    private static int[] ipv6Groups(String value) {
        int gap = value.indexOf("::");
        if (gap >= 0 && value.indexOf("::", gap + 1) >= 0) {
            return null;
        }
        String[] head = gap < 0 ? value.split(":", -1) : value.substring(0, gap).split(":", -1);
        String[] tail = gap < 0 ? new String[0] : value.substring(gap + 2).split(":", -1);
        if (gap >= 0 && head.length == 1 && head[0].isEmpty()) {
            head = new String[0];
        }
        if (gap >= 0 && tail.length == 1 && tail[0].isEmpty()) {
            tail = new String[0];
        }
        if ((gap < 0 && head.length != 8) || head.length + tail.length > (gap < 0 ? 8 : 7)) {
            return null;
        }
        int[] groups = new int[8];
        try {
            for (int i = 0; i < head.length; i++) {
                groups[i] = group(head[i]);
            }
            for (int i = 0; i < tail.length; i++) {
                groups[8 - tail.length + i] = group(tail[i]);
            }
        } catch (NumberFormatException e) {
            return null;
        }
        return groups;
    }

    private static int group(String text) {
        if (text.isEmpty() || text.length() > 4) {
            throw new NumberFormatException(text);
        }
        return Integer.parseInt(text, 16);
    }
}
