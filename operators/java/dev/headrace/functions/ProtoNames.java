package dev.headrace.functions;

import java.util.ArrayList;
import java.util.Base64;
import java.util.List;

/**
 * Confluent's message indexes of a message in a registered Protobuf schema: the serialized
 * {@code FileDescriptorProto} in base64 (Confluent's Python serializer) or the {@code .proto} text
 * (its Java serializer). Only names are read: package, messages and their nesting.
 */
final class ProtoNames {
    private ProtoNames() {
    }

    /** The indexes of message {@code fullName} in {@code schema}, or null when it defines no such message. */
    static int[] indexes(String schema, String fullName) {
        byte[] descriptor = null;
        try {
            descriptor = Base64.getDecoder().decode(schema.trim());
        } catch (IllegalArgumentException notBase64) {
            // .proto text
        }
        if (descriptor != null) {
            try {
                Message file = parseMessage(descriptor, 0, descriptor.length, true);
                return find(file.nested, file.name, fullName);
            } catch (RuntimeException notADescriptor) {
                // text that happens to be base64
            }
        }
        return find(parseText(schema), packageOf(schema), fullName);
    }

    private static final class Message {
        String name = "";
        final List<Message> nested = new ArrayList<>();
    }

    private static int[] find(List<Message> messages, String prefix, String fullName) {
        for (int i = 0; i < messages.size(); i++) {
            Message m = messages.get(i);
            String name = prefix.isEmpty() ? m.name : prefix + "." + m.name;
            if (name.equals(fullName)) {
                return new int[] {i};
            }
            int[] inner = find(m.nested, name, fullName);
            if (inner != null) {
                int[] out = new int[inner.length + 1];
                out[0] = i;
                System.arraycopy(inner, 0, out, 1, inner.length);
                return out;
            }
        }
        return null;
    }

    // -- FileDescriptorProto: package = 2, message_type = 4; DescriptorProto: name = 1, nested_type = 3

    private static Message parseMessage(byte[] b, int pos, int end, boolean file) {
        Message out = new Message();
        while (pos < end) {
            long[] tag = varint(b, pos);
            pos = (int) tag[1];
            int field = (int) (tag[0] >>> 3);
            int wire = (int) (tag[0] & 7);
            if (wire == 0) {
                pos = (int) varint(b, pos)[1];
            } else if (wire == 1) {
                pos += 8;
            } else if (wire == 5) {
                pos += 4;
            } else if (wire == 2) {
                long[] len = varint(b, pos);
                int start = (int) len[1];
                int stop = start + (int) len[0];
                if (len[0] < 0 || stop > end) {
                    throw new IllegalArgumentException("truncated");
                }
                if ((file && field == 2) || (!file && field == 1)) {
                    out.name = new String(b, start, stop - start, java.nio.charset.StandardCharsets.UTF_8);
                } else if ((file && field == 4) || (!file && field == 3)) {
                    out.nested.add(parseMessage(b, start, stop, false));
                }
                pos = stop;
            } else {
                throw new IllegalArgumentException("wire type " + wire);
            }
        }
        if (pos != end) {
            throw new IllegalArgumentException("truncated");
        }
        return out;
    }

    private static long[] varint(byte[] b, int pos) {
        long value = 0;
        for (int shift = 0; shift < 64; shift += 7) {
            if (pos >= b.length) {
                throw new IllegalArgumentException("truncated varint");
            }
            int x = b[pos++];
            value |= (long) (x & 0x7F) << shift;
            if (x >= 0) {
                return new long[] {value, pos};
            }
        }
        throw new IllegalArgumentException("varint too long");
    }

    // -- .proto text: tokens, then messages by the braces that open and close them

    private static List<String> tokens(String text) {
        List<String> out = new ArrayList<>();
        int i = 0;
        int n = text.length();
        while (i < n) {
            char c = text.charAt(i);
            if (Character.isWhitespace(c)) {
                i++;
            } else if (c == '/' && i + 1 < n && text.charAt(i + 1) == '/') {
                while (i < n && text.charAt(i) != '\n') {
                    i++;
                }
            } else if (c == '/' && i + 1 < n && text.charAt(i + 1) == '*') {
                int close = text.indexOf("*/", i + 2);
                i = close < 0 ? n : close + 2;
            } else if (c == '"' || c == '\'') {
                int j = i + 1;
                while (j < n && text.charAt(j) != c) {
                    j += text.charAt(j) == '\\' ? 2 : 1;
                }
                out.add("\"");
                i = j + 1;
            } else if (Character.isLetterOrDigit(c) || c == '_' || c == '.') {
                int j = i;
                while (j < n && (Character.isLetterOrDigit(text.charAt(j)) || text.charAt(j) == '_'
                        || text.charAt(j) == '.')) {
                    j++;
                }
                out.add(text.substring(i, j));
                i = j;
            } else {
                out.add(String.valueOf(c));
                i++;
            }
        }
        return out;
    }

    private static String packageOf(String text) {
        List<String> t = tokens(text);
        for (int i = 0; i + 1 < t.size(); i++) {
            if (t.get(i).equals("package")) {
                return t.get(i + 1);
            }
        }
        return "";
    }

    private static List<Message> parseText(String text) {
        List<String> t = tokens(text);
        Message file = new Message();
        List<Message> frames = new ArrayList<>(); // null entries stand for blocks that are not messages
        frames.add(file);
        for (int i = 0; i < t.size(); i++) {
            String token = t.get(i);
            if (token.equals("message") && i + 2 < t.size() && t.get(i + 2).equals("{")) {
                Message m = new Message();
                m.name = t.get(i + 1);
                Message parent = frames.get(frames.size() - 1);
                if (parent != null) {
                    parent.nested.add(m);
                }
                frames.add(m);
                i += 2;
            } else if (token.equals("{")) {
                frames.add(null);
            } else if (token.equals("}") && frames.size() > 1) {
                frames.remove(frames.size() - 1);
            }
        }
        return file.nested;
    }
}
