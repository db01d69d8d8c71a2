package dev.headrace.functions;

import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.JsonNode;

import java.math.BigDecimal;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.regex.Pattern;

/**
 * One compiled JSON Schema (draft 2020-12) node, for the keyword subset Headrace checks in the JVM.
 *
 * <p>The subset (type, enum, const, properties, required, additionalProperties, string length and
 * pattern, numeric bounds, multipleOf, items, array and object sizes, uniqueItems) covers flat and
 * nested record schemas. A schema using anything else ({@code $ref}, {@code anyOf}, ...) is checked
 * by the Python validator instead: {@code schemas/jsonschema.py} makes that choice with the same
 * keyword lists, and {@link #compile} refuses unknown keywords so the two cannot drift silently.
 *
 * <p>{@link #validate} returns the first error as a JSON Pointer and a message, or null.
 */
final class SchemaNode {

    static final Set<String> CHECKED = Set.of(
            "type", "enum", "const", "properties", "required", "additionalProperties",
            "minLength", "maxLength", "pattern", "minimum", "maximum", "exclusiveMinimum",
            "exclusiveMaximum", "multipleOf", "items", "minItems", "maxItems", "uniqueItems",
            "minProperties", "maxProperties");
    static final Set<String> ANNOTATIONS = Set.of(
            "$schema", "$id", "$comment", "title", "description", "default", "examples",
            "deprecated", "readOnly", "writeOnly", "format", "contentMediaType", "contentEncoding");

    private static final int T_NULL = 1, T_BOOLEAN = 2, T_OBJECT = 4, T_ARRAY = 8, T_NUMBER = 16,
            T_INTEGER = 32, T_STRING = 64;
    private static final int MAX_SHOWN = 200;

    /** An error: where (JSON Pointer) and what. */
    static final class Failure {
        final String path;
        final String message;

        Failure(String path, String message) {
            this.path = path;
            this.message = message;
        }
    }

    private Boolean constant; // a boolean schema: true accepts everything, false nothing
    private int types;        // 0: any type
    private String typeText;
    private List<JsonNode> enumValues;
    private JsonNode constValue;
    private Map<String, SchemaNode> properties;
    private String[] required;
    private SchemaNode additional;
    private int minLength = -1, maxLength = -1;
    private Pattern pattern;
    private String patternText;
    private Bound minimum, maximum, exclusiveMinimum, exclusiveMaximum;
    private BigDecimal multipleOf;
    private SchemaNode items;
    private int minItems = -1, maxItems = -1;
    private boolean uniqueItems;
    private int minProperties = -1, maxProperties = -1;

    /** A numeric bound, compared as a long when both sides are integral. */
    private static final class Bound {
        final BigDecimal value;
        final boolean integral;
        final long asLong;
        final String text;

        Bound(JsonNode node) {
            value = node.decimalValue();
            integral = node.isIntegralNumber() && node.canConvertToLong();
            asLong = integral ? node.longValue() : 0L;
            text = node.toString();
        }

        /** sign of (instance - bound). */
        int compare(JsonNode instance) {
            if (integral && (instance.isInt() || instance.isLong())) {
                return Long.compare(instance.longValue(), asLong);
            }
            return instance.decimalValue().compareTo(value);
        }
    }

    static SchemaNode compile(JsonNode schema, String where) {
        SchemaNode node = new SchemaNode();
        if (schema.isBoolean()) {
            node.constant = schema.booleanValue();
            return node;
        }
        if (!schema.isObject()) {
            throw new IllegalArgumentException("schema at " + where + " is not an object or a boolean");
        }
        for (Map.Entry<String, JsonNode> entry : schema.properties()) {
            String key = entry.getKey();
            JsonNode value = entry.getValue();
            switch (key) {
                case "type":
                    node.compileType(value);
                    break;
                case "enum":
                    node.enumValues = new ArrayList<>();
                    value.forEach(node.enumValues::add);
                    break;
                case "const":
                    node.constValue = value;
                    break;
                case "properties":
                    node.properties = new LinkedHashMap<>();
                    for (Map.Entry<String, JsonNode> p : value.properties()) {
                        node.properties.put(p.getKey(), compile(p.getValue(), where + "/properties/" + p.getKey()));
                    }
                    break;
                case "required":
                    node.required = new String[value.size()];
                    for (int i = 0; i < value.size(); i++) {
                        node.required[i] = value.get(i).asText();
                    }
                    break;
                case "additionalProperties":
                    node.additional = compile(value, where + "/additionalProperties");
                    break;
                case "minLength":
                    node.minLength = value.intValue();
                    break;
                case "maxLength":
                    node.maxLength = value.intValue();
                    break;
                case "pattern":
                    node.patternText = value.asText();
                    node.pattern = Pattern.compile(ecmaEnd(node.patternText));
                    break;
                case "minimum":
                    node.minimum = new Bound(value);
                    break;
                case "maximum":
                    node.maximum = new Bound(value);
                    break;
                case "exclusiveMinimum":
                    node.exclusiveMinimum = new Bound(value);
                    break;
                case "exclusiveMaximum":
                    node.exclusiveMaximum = new Bound(value);
                    break;
                case "multipleOf":
                    node.multipleOf = value.decimalValue();
                    break;
                case "items":
                    node.items = compile(value, where + "/items");
                    break;
                case "minItems":
                    node.minItems = value.intValue();
                    break;
                case "maxItems":
                    node.maxItems = value.intValue();
                    break;
                case "uniqueItems":
                    node.uniqueItems = value.booleanValue();
                    break;
                case "minProperties":
                    node.minProperties = value.intValue();
                    break;
                case "maxProperties":
                    node.maxProperties = value.intValue();
                    break;
                default:
                    if (!ANNOTATIONS.contains(key)) {
                        throw new IllegalArgumentException(
                                "keyword '" + key + "' at " + where + " is not in the JVM subset");
                    }
            }
        }
        return node;
    }

    /**
     * ECMA-262's {@code $} (no multiline flag) matches only at the very end; Java's also matches
     * before a final line terminator. Outside character classes it becomes {@code \z}.
     */
    static String ecmaEnd(String pattern) {
        StringBuilder out = new StringBuilder(pattern.length() + 4);
        boolean inClass = false;
        for (int i = 0; i < pattern.length(); i++) {
            char c = pattern.charAt(i);
            if (c == '\\' && i + 1 < pattern.length()) {
                out.append(c).append(pattern.charAt(++i));
                continue;
            }
            if (c == '[') {
                inClass = true;
            } else if (c == ']') {
                inClass = false;
            } else if (c == '$' && !inClass) {
                out.append("\\z");
                continue;
            }
            out.append(c);
        }
        return out.toString();
    }

    private void compileType(JsonNode value) {
        List<String> names = new ArrayList<>();
        if (value.isArray()) {
            value.forEach(v -> names.add(v.asText()));
        } else {
            names.add(value.asText());
        }
        StringBuilder text = new StringBuilder();
        for (String name : names) {
            switch (name) {
                case "null": types |= T_NULL; break;
                case "boolean": types |= T_BOOLEAN; break;
                case "object": types |= T_OBJECT; break;
                case "array": types |= T_ARRAY; break;
                case "number": types |= T_NUMBER; break;
                case "integer": types |= T_INTEGER; break;
                case "string": types |= T_STRING; break;
                default: throw new IllegalArgumentException("unknown type '" + name + "'");
            }
            text.append(text.length() == 0 ? "" : ", ").append('"').append(name).append('"');
        }
        typeText = (names.size() == 1 ? "type " : "types ") + text;
    }

    private static boolean isInteger(JsonNode v) {
        if (v.isIntegralNumber()) {
            return true;
        }
        if (!v.isNumber()) {
            return false;
        }
        double d = v.doubleValue();
        if (!Double.isInfinite(d) && d == Math.rint(d) && Math.abs(d) < 9.0e15) {
            return true;
        }
        return v.decimalValue().stripTrailingZeros().scale() <= 0;
    }

    private boolean typeMatches(JsonNode v) {
        switch (v.getNodeType()) {
            case STRING: return (types & T_STRING) != 0;
            case NUMBER:
                return (types & T_NUMBER) != 0 || ((types & T_INTEGER) != 0 && isInteger(v));
            case OBJECT: return (types & T_OBJECT) != 0;
            case ARRAY: return (types & T_ARRAY) != 0;
            case BOOLEAN: return (types & T_BOOLEAN) != 0;
            case NULL: return (types & T_NULL) != 0;
            default: return false;
        }
    }

    static String shown(JsonNode v) {
        String text = v.toString();
        return text.length() <= MAX_SHOWN ? text : text.substring(0, MAX_SHOWN) + "…";
    }

    static String pointer(String parent, String key) {
        if (key.indexOf('~') >= 0 || key.indexOf('/') >= 0) {
            key = key.replace("~", "~0").replace("/", "~1");
        }
        return parent + "/" + key;
    }

    /**
     * Whether a record can be checked as a stream of its top-level members: an object schema with
     * no keyword that needs the whole object as a value (enum, const, a boolean schema, sizes).
     */
    boolean streamableObject() {
        return constant == null && enumValues == null && constValue == null && minProperties < 0
                && maxProperties < 0 && (types == 0 || (types & T_OBJECT) != 0) && properties != null
                && properties.size() <= 64;
    }

    Map<String, SchemaNode> properties() {
        return properties;
    }

    String[] required() {
        return required == null ? new String[0] : required;
    }

    SchemaNode additional() {
        return additional;
    }

    boolean forbidsAdditional() {
        return additional != null && Boolean.FALSE.equals(additional.constant);
    }

    /** The first error in {@code v} (at JSON Pointer {@code path}, "" for the root), or null. */
    Failure validate(JsonNode v, String path) {
        if (constant != null) {
            return constant ? null : new Failure(at(path), "False schema does not allow " + shown(v));
        }
        if (types != 0 && !typeMatches(v)) {
            return new Failure(at(path), shown(v) + " is not of " + typeText);
        }
        if (constValue != null && !JsonEquality.equal(v, constValue)) {
            return new Failure(at(path), shown(constValue) + " was expected");
        }
        if (enumValues != null) {
            boolean found = false;
            for (JsonNode e : enumValues) {
                if (JsonEquality.equal(v, e)) {
                    found = true;
                    break;
                }
            }
            if (!found) {
                return new Failure(at(path), shown(v) + " is not one of " + enumValues);
            }
        }
        if (v.isTextual()) {
            return validateString(v, path);
        }
        if (v.isNumber()) {
            return validateNumber(v, path);
        }
        if (v.isObject()) {
            return validateObject(v, path);
        }
        if (v.isArray()) {
            return validateArray(v, path);
        }
        return null;
    }

    private static String at(String path) {
        return path.isEmpty() ? "/" : path;
    }

    private Failure validateString(JsonNode v, String path) {
        if (minLength >= 0 || maxLength >= 0) {
            String s = v.textValue();
            int length = s.codePointCount(0, s.length());
            if (minLength >= 0 && length < minLength) {
                return new Failure(at(path), shown(v) + " is shorter than " + minLength
                        + (minLength == 1 ? " character" : " characters"));
            }
            if (maxLength >= 0 && length > maxLength) {
                return new Failure(at(path), shown(v) + " is longer than " + maxLength
                        + (maxLength == 1 ? " character" : " characters"));
            }
        }
        if (pattern != null && !pattern.matcher(v.textValue()).find()) {
            return new Failure(at(path), shown(v) + " does not match \"" + patternText + "\"");
        }
        return null;
    }

    private Failure validateNumber(JsonNode v, String path) {
        if (minimum != null && minimum.compare(v) < 0) {
            return new Failure(at(path), shown(v) + " is less than the minimum of " + minimum.text);
        }
        if (maximum != null && maximum.compare(v) > 0) {
            return new Failure(at(path), shown(v) + " is greater than the maximum of " + maximum.text);
        }
        if (exclusiveMinimum != null && exclusiveMinimum.compare(v) <= 0) {
            return new Failure(at(path), shown(v) + " is less than or equal to the minimum of "
                    + exclusiveMinimum.text);
        }
        if (exclusiveMaximum != null && exclusiveMaximum.compare(v) >= 0) {
            return new Failure(at(path), shown(v) + " is greater than or equal to the maximum of "
                    + exclusiveMaximum.text);
        }
        if (multipleOf != null && v.decimalValue().remainder(multipleOf).signum() != 0) {
            return new Failure(at(path), shown(v) + " is not a multiple of " + multipleOf.toPlainString());
        }
        return null;
    }

    private Failure validateObject(JsonNode v, String path) {
        if (required != null) {
            for (String name : required) {
                if (!v.has(name)) {
                    return new Failure(at(path), "\"" + name + "\" is a required property");
                }
            }
        }
        int size = v.size();
        if (minProperties >= 0 && size < minProperties) {
            return new Failure(at(path), shown(v) + " has less than " + minProperties
                    + (minProperties == 1 ? " property" : " properties"));
        }
        if (maxProperties >= 0 && size > maxProperties) {
            return new Failure(at(path), shown(v) + " has more than " + maxProperties
                    + (maxProperties == 1 ? " property" : " properties"));
        }
        if (properties == null && additional == null) {
            return null;
        }
        for (Map.Entry<String, JsonNode> field : v.properties()) {
            SchemaNode sub = properties == null ? null : properties.get(field.getKey());
            if (sub == null) {
                if (additional == null) {
                    continue;
                }
                if (Boolean.FALSE.equals(additional.constant)) {
                    return new Failure(at(path), "Additional properties are not allowed ('"
                            + field.getKey() + "' was unexpected)");
                }
                sub = additional;
            }
            Failure failure = sub.validate(field.getValue(), pointer(path, field.getKey()));
            if (failure != null) {
                return failure;
            }
        }
        return null;
    }

    private Failure validateArray(JsonNode v, String path) {
        int size = v.size();
        if (minItems >= 0 && size < minItems) {
            return new Failure(at(path), shown(v) + " has less than " + minItems + (minItems == 1 ? " item" : " items"));
        }
        if (maxItems >= 0 && size > maxItems) {
            return new Failure(at(path), shown(v) + " has more than " + maxItems + (maxItems == 1 ? " item" : " items"));
        }
        if (uniqueItems) {
            for (int i = 0; i < size; i++) {
                for (int j = i + 1; j < size; j++) {
                    if (JsonEquality.equal(v.get(i), v.get(j))) {
                        return new Failure(at(path), shown(v) + " has non-unique elements");
                    }
                }
            }
        }
        if (items != null) {
            for (int i = 0; i < size; i++) {
                Failure failure = items.validate(v.get(i), path + "/" + i);
                if (failure != null) {
                    return failure;
                }
            }
        }
        return null;
    }
}
