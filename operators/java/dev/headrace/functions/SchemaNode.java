package dev.headrace.functions;

import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.JsonNode;

import java.math.BigDecimal;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.regex.Pattern;

/**
 * One compiled JSON Schema (draft 2020-12) node, for the keyword subset Headrace checks in the JVM.
 *
 * <p>The subset: type, enum, const, properties, required, additionalProperties, string length and
 * pattern, numeric bounds, multipleOf, items, array and object sizes, uniqueItems; local
 * {@code $ref} (a JSON Pointer into the document, recursion included) and {@code $defs};
 * allOf, anyOf, oneOf, not, if/then/else; patternProperties, propertyNames, dependentRequired,
 * dependentSchemas; prefixItems, contains, minContains, maxContains. A schema using anything else
 * ({@code $dynamicRef}, {@code unevaluated*}, a remote {@code $ref}, a nested {@code $id} ...) is
 * checked by the Python validator instead: {@code schemas/jsonschema.py} makes that choice with the
 * same keyword lists, and {@link #compile} refuses unknown keywords so the two cannot drift silently.
 *
 * <p>{@link #validate} returns the first error as a JSON Pointer and a message, or null.
 */
final class SchemaNode {

    static final Set<String> CHECKED = Set.of(
            "type", "enum", "const", "properties", "required", "additionalProperties",
            "minLength", "maxLength", "pattern", "minimum", "maximum", "exclusiveMinimum",
            "exclusiveMaximum", "multipleOf", "items", "minItems", "maxItems", "uniqueItems",
            "minProperties", "maxProperties", "$ref", "$defs", "allOf", "anyOf", "oneOf", "not",
            "if", "then", "else", "patternProperties", "prefixItems", "contains", "minContains",
            "maxContains", "dependentRequired", "dependentSchemas", "propertyNames");
    static final Set<String> ANNOTATIONS = Set.of(
            "$schema", "$id", "$comment", "title", "description", "default", "examples",
            "deprecated", "readOnly", "writeOnly", "format", "contentMediaType", "contentEncoding",
            "contentSchema", "$anchor");

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
    /** The pattern when it is {@code ^} and plain characters: a prefix test, no regex engine. */
    private String patternPrefix;
    private Bound minimum, maximum, exclusiveMinimum, exclusiveMaximum;
    private BigDecimal multipleOf;
    private SchemaNode items;
    private int minItems = -1, maxItems = -1;
    private boolean uniqueItems;
    private int minProperties = -1, maxProperties = -1;
    private SchemaNode ref;
    private String refText;
    private SchemaNode[] allOf, anyOf, oneOf;
    private SchemaNode not, ifSchema, thenSchema, elseSchema;
    private Pattern[] patterns;
    private String[] patternTexts;
    private SchemaNode[] patternNodes;
    private SchemaNode propertyNames;
    private Map<String, String[]> dependentRequired;
    private Map<String, SchemaNode> dependentSchemas;
    private SchemaNode[] prefixItems;
    private SchemaNode contains;
    private int minContains = 1, maxContains = -1;
    private boolean applicators; // keywords the streaming check of a record does not do
    private static final int MAX_DEPTH = 1000;

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
        Compiler compiler = new Compiler(schema);
        SchemaNode root = new SchemaNode();
        compiler.byPointer.put("", root);
        root.fill(compiler, schema, where);
        return root;
    }

    /** One document's compilation: its root, for local {@code $ref}s, and the nodes they name. */
    private static final class Compiler {
        final JsonNode root;
        final Map<String, SchemaNode> byPointer = new HashMap<>();

        Compiler(JsonNode root) {
            this.root = root;
        }

        SchemaNode node(JsonNode schema, String where) {
            SchemaNode node = new SchemaNode();
            node.fill(this, schema, where);
            return node;
        }

        SchemaNode[] nodes(JsonNode list, String where) {
            if (!list.isArray() || list.isEmpty()) {
                throw new IllegalArgumentException(where + " is not a non-empty array of schemas");
            }
            SchemaNode[] out = new SchemaNode[list.size()];
            for (int i = 0; i < out.length; i++) {
                out[i] = node(list.get(i), where + "/" + i);
            }
            return out;
        }

        SchemaNode ref(String ref, String where) {
            if (!ref.startsWith("#") || (ref.length() > 1 && ref.charAt(1) != '/')) {
                throw new IllegalArgumentException("$ref '" + ref + "' at " + where
                        + " is not a JSON Pointer into the document (#/...)");
            }
            String pointer = percentDecoded(ref.substring(1));
            SchemaNode known = byPointer.get(pointer);
            if (known != null) {
                return known;
            }
            JsonNode target = root.at(pointer);
            if (target.isMissingNode()) {
                throw new IllegalArgumentException("$ref '" + ref + "' at " + where + " points nowhere");
            }
            SchemaNode node = new SchemaNode();
            byPointer.put(pointer, node); // before filling it: a recursive schema finds itself
            node.fill(this, target, "#" + pointer);
            return node;
        }

        private static String percentDecoded(String text) {
            if (text.indexOf('%') < 0) {
                return text;
            }
            java.io.ByteArrayOutputStream out = new java.io.ByteArrayOutputStream();
            for (int i = 0; i < text.length(); i++) {
                char c = text.charAt(i);
                if (c == '%' && i + 2 < text.length()) {
                    out.write(Integer.parseInt(text.substring(i + 1, i + 3), 16));
                    i += 2;
                } else {
                    byte[] b = String.valueOf(c).getBytes(java.nio.charset.StandardCharsets.UTF_8);
                    out.write(b, 0, b.length);
                }
            }
            return out.toString(java.nio.charset.StandardCharsets.UTF_8);
        }
    }

    private void fill(Compiler compiler, JsonNode schema, String where) {
        SchemaNode node = this;
        if (schema.isBoolean()) {
            node.constant = schema.booleanValue();
            return;
        }
        if (!schema.isObject()) {
            throw new IllegalArgumentException("schema at " + where + " is not an object or a boolean");
        }
        if (schema.has("$id") && !"#".equals(where)) {
            throw new IllegalArgumentException("'$id' at " + where + " (a nested base URI) is not in the JVM subset");
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
                        node.properties.put(p.getKey(), compiler.node(p.getValue(), where + "/properties/" + p.getKey()));
                    }
                    break;
                case "required":
                    node.required = new String[value.size()];
                    for (int i = 0; i < value.size(); i++) {
                        node.required[i] = value.get(i).asText();
                    }
                    break;
                case "additionalProperties":
                    node.additional = compiler.node(value, where + "/additionalProperties");
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
                    node.patternPrefix = plainPrefix(node.patternText);
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
                    node.items = compiler.node(value, where + "/items");
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
                case "$ref":
                    node.refText = value.asText();
                    node.ref = compiler.ref(node.refText, where);
                    node.applicators = true;
                    break;
                case "$defs":
                    for (Map.Entry<String, JsonNode> d : value.properties()) {
                        compiler.node(d.getValue(), where + "/$defs/" + d.getKey()); // refused here, not when used
                    }
                    break;
                case "allOf":
                    node.allOf = compiler.nodes(value, where + "/allOf");
                    node.applicators = true;
                    break;
                case "anyOf":
                    node.anyOf = compiler.nodes(value, where + "/anyOf");
                    node.applicators = true;
                    break;
                case "oneOf":
                    node.oneOf = compiler.nodes(value, where + "/oneOf");
                    node.applicators = true;
                    break;
                case "not":
                    node.not = compiler.node(value, where + "/not");
                    node.applicators = true;
                    break;
                case "if":
                    node.ifSchema = compiler.node(value, where + "/if");
                    if (schema.has("then")) {
                        node.thenSchema = compiler.node(schema.get("then"), where + "/then");
                    }
                    if (schema.has("else")) {
                        node.elseSchema = compiler.node(schema.get("else"), where + "/else");
                    }
                    node.applicators = true;
                    break;
                case "then":
                case "else":
                    break; // with "if" (above); alone they do nothing
                case "patternProperties": {
                    int n = value.size();
                    node.patterns = new Pattern[n];
                    node.patternTexts = new String[n];
                    node.patternNodes = new SchemaNode[n];
                    int i = 0;
                    for (Map.Entry<String, JsonNode> p : value.properties()) {
                        node.patternTexts[i] = p.getKey();
                        node.patterns[i] = Pattern.compile(ecmaEnd(p.getKey()));
                        node.patternNodes[i] = compiler.node(p.getValue(), where + "/patternProperties/" + p.getKey());
                        i++;
                    }
                    node.applicators = true;
                    break;
                }
                case "propertyNames":
                    node.propertyNames = compiler.node(value, where + "/propertyNames");
                    node.applicators = true;
                    break;
                case "dependentRequired":
                    node.dependentRequired = new LinkedHashMap<>();
                    for (Map.Entry<String, JsonNode> d : value.properties()) {
                        String[] names = new String[d.getValue().size()];
                        for (int i = 0; i < names.length; i++) {
                            names[i] = d.getValue().get(i).asText();
                        }
                        node.dependentRequired.put(d.getKey(), names);
                    }
                    node.applicators = true;
                    break;
                case "dependentSchemas":
                    node.dependentSchemas = new LinkedHashMap<>();
                    for (Map.Entry<String, JsonNode> d : value.properties()) {
                        node.dependentSchemas.put(d.getKey(), compiler.node(d.getValue(),
                                where + "/dependentSchemas/" + d.getKey()));
                    }
                    node.applicators = true;
                    break;
                case "prefixItems":
                    node.prefixItems = compiler.nodes(value, where + "/prefixItems");
                    break;
                case "contains":
                    node.contains = compiler.node(value, where + "/contains");
                    break;
                case "minContains":
                    node.minContains = value.intValue();
                    break;
                case "maxContains":
                    node.maxContains = value.intValue();
                    break;
                default:
                    if (!ANNOTATIONS.contains(key)) {
                        throw new IllegalArgumentException(
                                "keyword '" + key + "' at " + where + " is not in the JVM subset");
                    }
            }
        }
    }

    /**
     * ECMA-262's {@code $} (no multiline flag) matches only at the very end; Java's also matches
     * before a final line terminator. Outside character classes it becomes {@code \z}.
     */
    /** {@code "/"} for the pattern {@code "^/"}: what a value must start with, when that is all it says. */
    static String plainPrefix(String pattern) {
        if (pattern.length() < 2 || pattern.charAt(0) != '^') {
            return null;
        }
        for (int i = 1; i < pattern.length(); i++) {
            if ("\\.[]{}()<>*+-=!?^$|".indexOf(pattern.charAt(i)) >= 0) {
                return null;
            }
        }
        return pattern.substring(1);
    }

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
        return constant == null && !applicators && enumValues == null && constValue == null && minProperties < 0
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
        return validate(v, path, 0);
    }

    private Failure validate(JsonNode v, String path, int depth) {
        if (depth > MAX_DEPTH) {
            return new Failure(at(path), "the schema's $ref recursion is deeper than " + MAX_DEPTH);
        }
        Failure own = validateOwn(v, path, depth);
        if (own != null || !applicators) {
            return own;
        }
        return validateApplicators(v, path, depth);
    }

    private Failure validateApplicators(JsonNode v, String path, int depth) {
        if (ref != null) {
            Failure f = ref.validate(v, path, depth + 1);
            if (f != null) {
                return f;
            }
        }
        if (allOf != null) {
            for (SchemaNode sub : allOf) {
                Failure f = sub.validate(v, path, depth + 1);
                if (f != null) {
                    return f;
                }
            }
        }
        if (anyOf != null) {
            boolean any = false;
            for (SchemaNode sub : anyOf) {
                if (sub.validate(v, path, depth + 1) == null) {
                    any = true;
                    break;
                }
            }
            if (!any) {
                return new Failure(at(path), shown(v) + " is not valid under any of the given schemas");
            }
        }
        if (oneOf != null) {
            int valid = 0;
            for (SchemaNode sub : oneOf) {
                if (sub.validate(v, path, depth + 1) == null && ++valid > 1) {
                    return new Failure(at(path), shown(v) + " is valid under more than one of the given schemas");
                }
            }
            if (valid == 0) {
                return new Failure(at(path), shown(v) + " is not valid under any of the given schemas");
            }
        }
        if (not != null && not.validate(v, path, depth + 1) == null) {
            return new Failure(at(path), shown(v) + " should not be valid under the 'not' schema");
        }
        if (ifSchema != null) {
            SchemaNode branch = ifSchema.validate(v, path, depth + 1) == null ? thenSchema : elseSchema;
            if (branch != null) {
                Failure f = branch.validate(v, path, depth + 1);
                if (f != null) {
                    return f;
                }
            }
        }
        if (v.isObject()) {
            return validateObjectApplicators(v, path, depth);
        }
        return null;
    }

    private Failure validateObjectApplicators(JsonNode v, String path, int depth) {
        if (dependentRequired != null) {
            for (Map.Entry<String, String[]> d : dependentRequired.entrySet()) {
                if (v.has(d.getKey())) {
                    for (String name : d.getValue()) {
                        if (!v.has(name)) {
                            return new Failure(at(path), "\"" + name + "\" is a dependency of \"" + d.getKey() + "\"");
                        }
                    }
                }
            }
        }
        if (dependentSchemas != null) {
            for (Map.Entry<String, SchemaNode> d : dependentSchemas.entrySet()) {
                if (v.has(d.getKey())) {
                    Failure f = d.getValue().validate(v, path, depth + 1);
                    if (f != null) {
                        return f;
                    }
                }
            }
        }
        if (propertyNames != null) {
            for (Map.Entry<String, JsonNode> field : v.properties()) {
                Failure f = propertyNames.validate(
                        org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.node.TextNode.valueOf(
                                field.getKey()), path, depth + 1);
                if (f != null) {
                    return new Failure(at(path), "property name " + shown(
                            org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.node.TextNode.valueOf(
                                    field.getKey())) + " is invalid: " + f.message);
                }
            }
        }
        return null;
    }

    private Failure validateOwn(JsonNode v, String path, int depth) {
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
            return validateObject(v, path, depth);
        }
        if (v.isArray()) {
            return validateArray(v, path, depth);
        }
        return null;
    }

    private static String at(String path) {
        return path.isEmpty() ? "/" : path;
    }

    private Failure validateString(JsonNode v, String path) {
        String text = v.textValue();
        int units = text.length();
        // a string has from ceil(units / 2) (all surrogate pairs) to units characters: they are
        // counted only when that range reaches past a bound (rarely: a page's path against 1..64)
        if ((minLength >= 0 && (units + 1) / 2 < minLength) || (maxLength >= 0 && units > maxLength)) {
            int length = text.codePointCount(0, units);
            if (minLength >= 0 && length < minLength) {
                return new Failure(at(path), shown(v) + " is shorter than " + minLength
                        + (minLength == 1 ? " character" : " characters"));
            }
            if (maxLength >= 0 && length > maxLength) {
                return new Failure(at(path), shown(v) + " is longer than " + maxLength
                        + (maxLength == 1 ? " character" : " characters"));
            }
        }
        if (pattern != null && !(patternPrefix != null ? text.startsWith(patternPrefix)
                : pattern.matcher(text).find())) {
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

    private Failure validateObject(JsonNode v, String path, int depth) {
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
        if (properties == null && additional == null && patterns == null) {
            return null;
        }
        for (Map.Entry<String, JsonNode> field : v.properties()) {
            String name = field.getKey();
            SchemaNode sub = properties == null ? null : properties.get(name);
            boolean matched = sub != null;
            if (sub != null) {
                Failure failure = sub.validate(field.getValue(), pointer(path, name), depth + 1);
                if (failure != null) {
                    return failure;
                }
            }
            if (patterns != null) {
                for (int i = 0; i < patterns.length; i++) {
                    if (patterns[i].matcher(name).find()) {
                        matched = true;
                        Failure failure = patternNodes[i].validate(field.getValue(), pointer(path, name), depth + 1);
                        if (failure != null) {
                            return failure;
                        }
                    }
                }
            }
            if (matched || additional == null) {
                continue;
            }
            if (Boolean.FALSE.equals(additional.constant)) {
                return new Failure(at(path), "Additional properties are not allowed ('" + name + "' was unexpected)");
            }
            Failure failure = additional.validate(field.getValue(), pointer(path, name), depth + 1);
            if (failure != null) {
                return failure;
            }
        }
        return null;
    }

    private Failure validateArray(JsonNode v, String path, int depth) {
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
        int prefix = prefixItems == null ? 0 : Math.min(prefixItems.length, size);
        for (int i = 0; i < prefix; i++) {
            Failure failure = prefixItems[i].validate(v.get(i), path + "/" + i, depth + 1);
            if (failure != null) {
                return failure;
            }
        }
        if (items != null) {
            for (int i = prefixItems == null ? 0 : prefixItems.length; i < size; i++) {
                Failure failure = items.validate(v.get(i), path + "/" + i, depth + 1);
                if (failure != null) {
                    return failure;
                }
            }
        }
        if (contains != null) {
            int matching = 0;
            for (int i = 0; i < size; i++) {
                if (contains.validate(v.get(i), path + "/" + i, depth + 1) == null) {
                    matching++;
                }
            }
            if (matching < minContains) {
                return new Failure(at(path), shown(v) + (minContains == 1
                        ? " does not contain items matching the given schema"
                        : " contains fewer than " + minContains + " items matching the given schema"));
            }
            if (maxContains >= 0 && matching > maxContains) {
                return new Failure(at(path), shown(v) + " contains more than " + maxContains
                        + " items matching the given schema");
            }
        }
        return null;
    }
}
