package dev.headrace.functions;

import org.apache.flink.table.data.RowData;
import org.apache.flink.table.types.DataType;

import java.util.concurrent.ConcurrentHashMap;

/**
 * {@code hr_validate(payload, spec)}: the {@code validate} step for JSON in the JVM: decode, check
 * against the compiled JSON Schema and extract the typed fields ({@link RecordCheck}).
 */
public final class ValidateJson extends RecordFunction<RecordCheck> {
    private static final long serialVersionUID = 1L;
    private static final ConcurrentHashMap<String, RecordCheck> CHECKS = new ConcurrentHashMap<>();

    @Override
    String functionName() {
        return "hr_validate";
    }

    @Override
    RecordCheck compiled(String spec) {
        return CHECKS.computeIfAbsent(spec, RecordCheck::parse);
    }

    @Override
    DataType rowType(RecordCheck check) {
        return check.rowType();
    }

    @Override
    RowData answer(RecordCheck check, Json.Slice bytes) {
        return check.check(bytes);
    }
}
