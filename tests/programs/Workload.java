// Multithreaded JVM workload for Tally's LD_PRELOAD test.
//
// Four worker threads repeat deterministic rounds until at least MIN_SECONDS have passed and
// every thread has done at least ROUNDS_PER_CYCLE rounds. A round builds strings, counts words
// in a HashMap, and round-trips the text through GZIPOutputStream/GZIPInputStream and through
// Deflater/Inflater directly. zlib's native state is malloc'ed, so under LD_PRELOAD the JVM's
// own C++ allocations and zlib's both come from Tally, from many threads at once.
//
// The output depends only on the work, never on timing: round r recomputes the result of round
// r % ROUNDS_PER_CYCLE and must get the same checksum (checked, not printed), and each thread
// prints the checksum of its first cycle.

import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.zip.CRC32;
import java.util.zip.DataFormatException;
import java.util.zip.Deflater;
import java.util.zip.GZIPInputStream;
import java.util.zip.GZIPOutputStream;
import java.util.zip.Inflater;

public class Workload {
    static final int THREADS = 4;
    static final int ROUNDS_PER_CYCLE = 6;
    static final long MIN_SECONDS = 3;
    static final String[] SYLLABLES = {"ka", "ri", "to", "me", "su", "na", "lo", "pe", "vi", "zu"};

    static final class Failure extends RuntimeException {
        Failure(String message) {
            super(message);
        }
    }

    static long nextRandom(long[] state) {
        long x = state[0];
        x ^= x << 13;
        x ^= x >>> 7;
        x ^= x << 17;
        state[0] = x;
        return x;
    }

    static long round(int thread, int round) throws IOException, DataFormatException {
        long[] state = {0x9E3779B97F4A7C15L * (thread * 1000 + round + 1)};
        StringBuilder text = new StringBuilder();
        Map<String, Integer> counts = new HashMap<>();
        List<String> words = new ArrayList<>();
        for (int i = 0; i < 30000; i++) {
            long n = nextRandom(state);
            StringBuilder word = new StringBuilder();
            int len = 1 + (int) Long.remainderUnsigned(n, 5);
            for (int k = 0; k < len; k++) {
                word.append(SYLLABLES[(int) Long.remainderUnsigned(n >>> (8 + 4 * k), 10)]);
            }
            String w = word.toString();
            words.add(w);
            counts.merge(w, 1, Integer::sum);
            text.append(w).append(' ').append(Long.toHexString(n & 0xFFFF)).append('\n');
        }
        String[] distinct = counts.keySet().toArray(new String[0]);
        Arrays.sort(distinct, (a, b) -> {
            int c = Integer.compare(counts.get(b), counts.get(a));
            return c != 0 ? c : a.compareTo(b);
        });
        byte[] original = text.toString().getBytes(StandardCharsets.UTF_8);

        // GZIP streams round trip.
        ByteArrayOutputStream gzipped = new ByteArrayOutputStream();
        try (GZIPOutputStream out = new GZIPOutputStream(gzipped)) {
            out.write(original);
        }
        byte[] unzipped;
        try (GZIPInputStream in = new GZIPInputStream(new ByteArrayInputStream(gzipped.toByteArray()))) {
            unzipped = in.readAllBytes();
        }
        if (!Arrays.equals(original, unzipped)) {
            throw new Failure("gzip round trip mismatch in thread " + thread + " round " + round);
        }

        // Raw Deflater/Inflater round trip, in small steps so zlib keeps its state across calls.
        Deflater deflater = new Deflater(Deflater.BEST_COMPRESSION);
        deflater.setInput(original);
        deflater.finish();
        ByteArrayOutputStream deflated = new ByteArrayOutputStream();
        byte[] buffer = new byte[4096];
        while (!deflater.finished()) {
            deflated.write(buffer, 0, deflater.deflate(buffer));
        }
        deflater.end();
        Inflater inflater = new Inflater();
        inflater.setInput(deflated.toByteArray());
        ByteArrayOutputStream inflated = new ByteArrayOutputStream();
        while (!inflater.finished()) {
            int n = inflater.inflate(buffer);
            if (n == 0 && (inflater.needsInput() || inflater.needsDictionary())) {
                throw new Failure("truncated deflate stream in thread " + thread);
            }
            inflated.write(buffer, 0, n);
        }
        inflater.end();
        if (!Arrays.equals(original, inflated.toByteArray())) {
            throw new Failure("deflate round trip mismatch in thread " + thread + " round " + round);
        }

        CRC32 crc = new CRC32();
        crc.update(original);
        crc.update(String.join(",", Arrays.copyOf(distinct, 10)).getBytes(StandardCharsets.UTF_8));
        return crc.getValue() * 31 + deflated.size() * 7 + words.size() + distinct.length;
    }

    public static void main(String[] args) throws Exception {
        long start = System.nanoTime();
        long[][] firstCycle = new long[THREADS][ROUNDS_PER_CYCLE];
        Throwable[] failures = new Throwable[THREADS];
        Thread[] threads = new Thread[THREADS];
        for (int t = 0; t < THREADS; t++) {
            final int thread = t;
            threads[t] = new Thread(() -> {
                try {
                    int r = 0;
                    while (r < ROUNDS_PER_CYCLE
                            || System.nanoTime() - start < MIN_SECONDS * 1_000_000_000L) {
                        long sum = round(thread, r % ROUNDS_PER_CYCLE);
                        if (r < ROUNDS_PER_CYCLE) {
                            firstCycle[thread][r] = sum;
                        } else if (firstCycle[thread][r % ROUNDS_PER_CYCLE] != sum) {
                            throw new Failure("thread " + thread + " round " + r + " gave "
                                    + sum + ", earlier " + firstCycle[thread][r % ROUNDS_PER_CYCLE]);
                        }
                        r++;
                    }
                } catch (Throwable e) {
                    failures[thread] = e;
                }
            }, "worker-" + t);
            threads[t].start();
        }
        for (Thread thread : threads) {
            thread.join();
        }
        int exitCode = 0;
        for (int t = 0; t < THREADS; t++) {
            if (failures[t] != null) {
                System.out.println("FAILED: " + failures[t]);
                exitCode = 1;
                continue;
            }
            CRC32 crc = new CRC32();
            for (long sum : firstCycle[t]) {
                crc.update(Long.toString(sum).getBytes(StandardCharsets.UTF_8));
            }
            System.out.println("thread " + t + ": cycle checksum " + Long.toHexString(crc.getValue()));
        }
        System.out.println(exitCode == 0 ? "ok" : "failed");
        System.exit(exitCode);
    }
}
