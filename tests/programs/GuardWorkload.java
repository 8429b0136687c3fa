// A short JVM workload for the guarded-sampling test, run as `java GuardWorkload.java` (the
// source launcher compiles it in memory first, so javac's work is part of the run): a HashMap of
// 100,000 strings sorted through a TreeMap into a checksum, and the sorted keys round-tripped
// through Deflater/Inflater, whose zlib state is malloc'ed. The output depends only on the work.

import java.nio.charset.StandardCharsets;
import java.util.Arrays;
import java.util.HashMap;
import java.util.Map;
import java.util.TreeMap;
import java.util.zip.DataFormatException;
import java.util.zip.Deflater;
import java.util.zip.Inflater;

public class GuardWorkload {
    public static void main(String[] args) throws DataFormatException {
        Map<String, Integer> map = new HashMap<>();
        for (int i = 0; i < 100_000; i++) {
            map.put("key" + i, i);
        }
        long checksum = 0;
        StringBuilder keys = new StringBuilder();
        for (Map.Entry<String, Integer> entry : new TreeMap<>(map).entrySet()) {
            checksum = (checksum * 31 + entry.getKey().hashCode() + entry.getValue()) % 1_000_000_007L;
            keys.append(entry.getKey()).append(',');
        }
        byte[] data = keys.toString().getBytes(StandardCharsets.UTF_8);

        Deflater deflater = new Deflater();
        deflater.setInput(data);
        deflater.finish();
        byte[] packed = new byte[data.length];
        int packedLength = deflater.deflate(packed);
        boolean allPacked = deflater.finished();
        deflater.end();

        Inflater inflater = new Inflater();
        inflater.setInput(packed, 0, packedLength);
        byte[] unpacked = new byte[data.length];
        int unpackedLength = inflater.inflate(unpacked);
        inflater.end();

        boolean roundTrip = allPacked && unpackedLength == data.length && Arrays.equals(unpacked, data);
        System.out.println("entries " + map.size() + " checksum " + checksum + " deflated "
                + packedLength + " round trip " + (roundTrip ? "ok" : "FAILED"));
    }
}
