package dev.headrace.functions;

import org.apache.flink.table.annotation.DataTypeHint;
import org.apache.flink.table.annotation.FunctionHint;
import org.apache.flink.table.data.GenericRowData;
import org.apache.flink.table.data.RowData;
import org.apache.flink.table.data.StringData;
import org.apache.flink.table.data.TimestampData;
import org.apache.flink.table.functions.ScalarFunction;

import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.Arrays;
import java.util.Objects;

/**
 * {@code hr_payload(payload, max_bytes)}: the payload a dead letter or late record carries, cut
 * to at most {@code max_bytes} of UTF-8 (at a character boundary) so that one huge record cannot
 * exceed the producer's request size and stop the job; with the whole payload's length in bytes,
 * its SHA-256 (hex) and whether it was cut, so the original can still be identified.
 *
 * <p>Only records that go to those outputs are passed through it, so it is off the hot path;
 * that is also why it says when ({@code failed_at}): SQL's CURRENT_TIMESTAMP in the same
 * projection was read from the clock for every record the operator saw, going there or not.
 *
 * <p>A dead letter's projection reads its five fields as five calls (Flink's generated code does
 * not share them), with the same payload object: the last answer is kept and given again for
 * the same object and arguments, so a record's payload is cut and hashed once, and its five
 * fields agree ({@code failed_at} included). Each record's payload is another object (the source
 * makes one per record, and the generated code copies it before the call).
 */
@FunctionHint(output = @DataTypeHint(
        value = "ROW<payload STRING, payload_bytes BIGINT, payload_sha256 STRING, payload_truncated BOOLEAN, "
                + "failed_at TIMESTAMP_LTZ(3)>",
        bridgedTo = RowData.class))
public final class PayloadDigest extends ScalarFunction {
    private static final long serialVersionUID = 1L;
    private static final char[] HEX = "0123456789abcdef".toCharArray();

    private transient StringData lastPayload;
    private transient Integer lastMaxBytes;
    private transient boolean lastBase64;
    private transient RowData lastAnswer;

    /**
     * A binary format's payload ({@code base64} true): the raw bytes in base64, the first
     * {@code max_bytes * 3 / 4} of them when cut, so that the text stays within {@code max_bytes}.
     */
    public RowData eval(@DataTypeHint(value = "STRING", bridgedTo = StringData.class) StringData payload,
                        Integer maxBytes, Boolean base64) {
        if (payload == null || base64 == null || !base64) {
            return eval(payload, maxBytes);
        }
        if (payload == lastPayload && lastBase64 && Objects.equals(maxBytes, lastMaxBytes)) {
            return lastAnswer;
        }
        RowData answer = digestBinary(payload, maxBytes);
        remember(payload, maxBytes, true, answer);
        return answer;
    }

    public RowData eval(@DataTypeHint(value = "STRING", bridgedTo = StringData.class) StringData payload,
                        Integer maxBytes) {
        if (payload == null) {
            return GenericRowData.of(null, 0L, null, false, now());
        }
        if (payload == lastPayload && !lastBase64 && Objects.equals(maxBytes, lastMaxBytes)) {
            return lastAnswer;
        }
        RowData answer = digestText(payload, maxBytes);
        remember(payload, maxBytes, false, answer);
        return answer;
    }

    private void remember(StringData payload, Integer maxBytes, boolean base64, RowData answer) {
        lastPayload = payload;
        lastMaxBytes = maxBytes;
        lastBase64 = base64;
        lastAnswer = answer;
    }

    private static RowData digestBinary(StringData payload, Integer maxBytes) {
        byte[] bytes = payload.toBytes();
        int limit = maxBytes == null ? bytes.length : Math.max(0, maxBytes) / 4 * 3;
        boolean cut = bytes.length > limit;
        String text = java.util.Base64.getEncoder().encodeToString(cut ? Arrays.copyOf(bytes, limit) : bytes);
        return GenericRowData.of(StringData.fromString(text), (long) bytes.length,
                StringData.fromString(sha256(bytes)), cut, now());
    }

    private static RowData digestText(StringData payload, Integer maxBytes) {
        byte[] bytes = payload.toBytes();
        int limit = maxBytes == null ? bytes.length : Math.max(0, maxBytes);
        boolean cut = bytes.length > limit;
        StringData kept = payload;
        if (cut) {
            int end = limit;
            while (end > 0 && (bytes[end] & 0xC0) == 0x80) { // never split a UTF-8 sequence
                end--;
            }
            kept = StringData.fromBytes(Arrays.copyOf(bytes, end));
        }
        return GenericRowData.of(kept, (long) bytes.length, StringData.fromString(sha256(bytes)), cut, now());
    }

    private static TimestampData now() {
        return TimestampData.fromEpochMillis(System.currentTimeMillis());
    }

    static String sha256(byte[] bytes) {
        try {
            byte[] digest = MessageDigest.getInstance("SHA-256").digest(bytes);
            char[] out = new char[digest.length * 2];
            for (int i = 0; i < digest.length; i++) {
                out[2 * i] = HEX[(digest[i] >> 4) & 0xF];
                out[2 * i + 1] = HEX[digest[i] & 0xF];
            }
            return new String(out);
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
    }
}
