package dev.headrace.functions;

import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.JsonNode;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * An Avro schema as a tree (Avro 1.11 specification), parsed from its JSON form. Named types
 * (records, enums, fixed) are registered by full name while parsing, so a record may refer to
 * itself (a linked list, a tree) and later fields may name earlier types.
 *
 * <p>Headrace has checked the schema with fastavro before it reaches the JVM; this parser still
 * refuses what it cannot read with an {@link IllegalArgumentException} naming the problem.
 */
final class AvroSchema {
    enum Kind { NULL, BOOLEAN, INT, LONG, FLOAT, DOUBLE, BYTES, STRING, RECORD, ENUM, ARRAY, MAP, UNION, FIXED }

    static final class Field {
        final String name;
        final List<String> aliases;
        AvroSchema type;
        final JsonNode defaultValue; // null when the field has none

        Field(String name, List<String> aliases, JsonNode defaultValue) {
            this.name = name;
            this.aliases = aliases;
            this.defaultValue = defaultValue;
        }
    }

    final Kind kind;
    String fullName; // named types
    List<String> aliases = List.of();
    String logical; // logicalType, if any
    int precision;
    int scale;
    final List<Field> fields = new ArrayList<>(); // RECORD
    final List<String> symbols = new ArrayList<>(); // ENUM
    String enumDefault; // ENUM
    AvroSchema items; // ARRAY, MAP (values)
    final List<AvroSchema> branches = new ArrayList<>(); // UNION
    int size; // FIXED

    private AvroSchema(Kind kind) {
        this.kind = kind;
    }

    static AvroSchema parse(JsonNode json) {
        return parse(json, "", new HashMap<>());
    }

    private static AvroSchema parse(JsonNode json, String namespace, Map<String, AvroSchema> named) {
        if (json.isTextual()) {
            return primitiveOrNamed(json.textValue(), namespace, named);
        }
        if (json.isArray()) {
            AvroSchema union = new AvroSchema(Kind.UNION);
            for (JsonNode branch : json) {
                union.branches.add(parse(branch, namespace, named));
            }
            return union;
        }
        if (!json.isObject() || !json.has("type")) {
            throw new IllegalArgumentException("not an Avro schema: " + json);
        }
        JsonNode typeNode = json.get("type");
        if (!typeNode.isTextual()) { // {"type": {"type": "array", ...}} or {"type": [...]}
            return parse(typeNode, namespace, named);
        }
        String type = typeNode.textValue();
        AvroSchema schema;
        switch (type) {
            case "record":
            case "error":
            case "enum":
            case "fixed": {
                schema = new AvroSchema(type.equals("enum") ? Kind.ENUM : type.equals("fixed") ? Kind.FIXED : Kind.RECORD);
                String name = json.path("name").asText("");
                String space = json.has("namespace") ? json.get("namespace").asText("") : namespace;
                schema.fullName = name.contains(".") ? name : space.isEmpty() ? name : space + "." + name;
                String ownSpace = schema.fullName.contains(".")
                        ? schema.fullName.substring(0, schema.fullName.lastIndexOf('.')) : "";
                schema.aliases = strings(json.get("aliases"), ownSpace);
                named.put(schema.fullName, schema);
                if (schema.kind == Kind.RECORD) {
                    for (JsonNode f : json.path("fields")) {
                        Field field = new Field(f.path("name").asText(), strings(f.get("aliases"), ""),
                                f.has("default") ? f.get("default") : null);
                        schema.fields.add(field);
                        field.type = parse(f.get("type"), ownSpace, named);
                    }
                } else if (schema.kind == Kind.ENUM) {
                    for (JsonNode s : json.path("symbols")) {
                        schema.symbols.add(s.asText());
                    }
                    schema.enumDefault = json.has("default") ? json.get("default").asText() : null;
                } else {
                    schema.size = json.path("size").asInt();
                }
                break;
            }
            case "array":
                schema = new AvroSchema(Kind.ARRAY);
                schema.items = parse(json.get("items"), namespace, named);
                break;
            case "map":
                schema = new AvroSchema(Kind.MAP);
                schema.items = parse(json.get("values"), namespace, named);
                break;
            default:
                schema = primitiveOrNamed(type, namespace, named);
                if (schema.fullName != null) {
                    return schema; // a reference to a named type: its own logical type stands
                }
        }
        if (json.has("logicalType")) {
            schema.logical = json.get("logicalType").asText();
            schema.precision = json.path("precision").asInt(0);
            schema.scale = json.path("scale").asInt(0);
        }
        return schema;
    }

    private static List<String> strings(JsonNode array, String namespace) {
        if (array == null || !array.isArray()) {
            return List.of();
        }
        List<String> out = new ArrayList<>();
        for (JsonNode s : array) {
            String name = s.asText();
            out.add(name.contains(".") || namespace.isEmpty() ? name : namespace + "." + name);
        }
        return out;
    }

    private static AvroSchema primitiveOrNamed(String name, String namespace, Map<String, AvroSchema> named) {
        switch (name) {
            case "null": return new AvroSchema(Kind.NULL);
            case "boolean": return new AvroSchema(Kind.BOOLEAN);
            case "int": return new AvroSchema(Kind.INT);
            case "long": return new AvroSchema(Kind.LONG);
            case "float": return new AvroSchema(Kind.FLOAT);
            case "double": return new AvroSchema(Kind.DOUBLE);
            case "bytes": return new AvroSchema(Kind.BYTES);
            case "string": return new AvroSchema(Kind.STRING);
            default:
                AvroSchema found = named.get(name.contains(".") || namespace.isEmpty() ? name : namespace + "." + name);
                if (found == null) {
                    found = named.get(name);
                }
                if (found == null) {
                    throw new IllegalArgumentException("unknown Avro type '" + name + "'");
                }
                return found;
        }
    }

    /** The unqualified name of a named type. */
    String shortName() {
        return fullName == null ? kind.name().toLowerCase() : fullName.substring(fullName.lastIndexOf('.') + 1);
    }

    /** The record fields by name (records only). */
    Map<String, Field> fieldsByName() {
        Map<String, Field> out = new LinkedHashMap<>();
        for (Field f : fields) {
            out.put(f.name, f);
        }
        return out;
    }

    @Override
    public String toString() {
        return fullName != null ? fullName : kind.name().toLowerCase();
    }
}
