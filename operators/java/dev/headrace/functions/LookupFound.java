package dev.headrace.functions;

import org.apache.flink.table.annotation.DataTypeHint;
import org.apache.flink.table.annotation.FunctionHint;
import org.apache.flink.table.annotation.InputGroup;
import org.apache.flink.table.data.RowData;
import org.apache.flink.table.functions.TableFunction;
import org.apache.flink.types.Row;

/**
 * {@code LATERAL TABLE(hr_found(row, wanted))}: one row when an enrich step's looked-up row says
 * whether it found the key (its first member) as {@code wanted}, none otherwise. A filter on the
 * Python function's result in a WHERE clause trips Flink's planner when it splits the Python calc
 * (an IndexOutOfBoundsException in RemoteCalcSplitRule); a correlate keeps the condition out of
 * that calc.
 */
@FunctionHint(output = @DataTypeHint("ROW<`_found` BOOLEAN>"))
public final class LookupFound extends TableFunction<Row> {
    private static final long serialVersionUID = 1L;

    public void eval(@DataTypeHint(inputGroup = InputGroup.ANY) Object row, Boolean wanted) {
        boolean found = false;
        if (row instanceof RowData) {
            RowData data = (RowData) row;
            found = !data.isNullAt(0) && data.getBoolean(0);
        } else if (row instanceof Row) {
            found = Boolean.TRUE.equals(((Row) row).getField(0));
        }
        if (found == Boolean.TRUE.equals(wanted)) {
            collect(Row.of(found));
        }
    }
}
