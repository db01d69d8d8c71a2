package dev.headrace.functions;

import java.io.DataInputStream;
import java.io.FileInputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.List;

/**
 * The decoding step's per-record cost, in one thread: {@code DecodeBench FUNCTION SPEC_FILE
 * PAYLOADS_FILE SECONDS} runs hr_validate ({@code validate}) or hr_decode ({@code decode}) with the
 * spec a compiled job uses over the payloads (each a 4-byte length, then the bytes), round after
 * round, for 2 s of warm-up and then SECONDS; prints {@code records seconds dead_letters cpu_seconds}.
 */
public final class DecodeBench {
    private DecodeBench() {
    }

    public static void main(String[] args) throws Exception {
        String spec = new String(Files.readAllBytes(Paths.get(args[1])), StandardCharsets.UTF_8);
        List<Json.Slice> payloads = new ArrayList<>();
        try (DataInputStream in = new DataInputStream(new FileInputStream(args[2]))) {
            while (in.available() > 0) {
                byte[] data = new byte[in.readInt()];
                in.readFully(data);
                Json.Slice slice = new Json.Slice();
                slice.data = data;
                slice.offset = 0;
                slice.length = data.length;
                payloads.add(slice);
            }
        }
        double seconds = Double.parseDouble(args[3]);
        boolean validate = "validate".equals(args[0]);
        RecordCheck check = validate ? RecordCheck.parse(spec) : null;
        DecodeBinary.Decoding decoding = validate ? null : DecodeBinary.Decoding.parse(spec);
        run(check, decoding, payloads, 2.0); // warm-up: the JIT compiles the hot path
        java.lang.management.ThreadMXBean threads = java.lang.management.ManagementFactory.getThreadMXBean();
        long cpu0 = threads.getCurrentThreadCpuTime();
        long t0 = System.nanoTime();
        long[] counts = run(check, decoding, payloads, seconds);
        double elapsed = (System.nanoTime() - t0) / 1e9;
        double cpu = (threads.getCurrentThreadCpuTime() - cpu0) / 1e9;
        System.out.println(counts[0] + " " + elapsed + " " + counts[1] + " " + cpu);
    }

    private static long[] run(RecordCheck check, DecodeBinary.Decoding decoding, List<Json.Slice> payloads,
                              double seconds) {
        long deadline = System.nanoTime() + (long) (seconds * 1e9);
        long records = 0;
        long dead = 0;
        while (System.nanoTime() < deadline) {
            for (Json.Slice p : payloads) {
                org.apache.flink.table.data.RowData row = check != null ? check.check(p) : decoding.decode(p);
                if (!row.isNullAt(1)) {
                    dead++;
                }
            }
            records += payloads.size();
        }
        return new long[] {records, dead};
    }
}
