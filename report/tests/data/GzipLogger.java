// The Java scenario of `tally leaks`: an "exception logger" that compresses each message with
// java.util.zip.GZIPOutputStream over a ByteArrayOutputStream.
//
//   java GzipLogger leak  N   never closes the stream: each one keeps the native zlib state that
//                             deflateInit2_ allocated under Java_java_util_zip_Deflater_init
//                             (about 260 KiB) until a cleaner runs; the logger keeps its streams
//                             (to "flush them later"), so native memory grows steadily.
//   java GzipLogger fixed N   closes it (try-with-resources): deflateEnd frees the state at once.
//   ... N wait                then waits for the end of its input (to be profiled over HTTP).
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.zip.GZIPOutputStream;

public class GzipLogger {
    /** Streams the leaky logger opened and means to flush later. */
    private static final List<GZIPOutputStream> pending = new ArrayList<>();

    static byte[] logLeaky(String message) throws IOException {
        ByteArrayOutputStream bytes = new ByteArrayOutputStream();
        GZIPOutputStream gzip = new GZIPOutputStream(bytes);
        gzip.write(message.getBytes(StandardCharsets.UTF_8));
        gzip.flush();
        pending.add(gzip); // never closed: the Deflater's native memory stays
        return bytes.toByteArray();
    }

    static byte[] logFixed(String message) throws IOException {
        ByteArrayOutputStream bytes = new ByteArrayOutputStream();
        try (GZIPOutputStream gzip = new GZIPOutputStream(bytes)) {
            gzip.write(message.getBytes(StandardCharsets.UTF_8));
        }
        return bytes.toByteArray();
    }

    static String describe(Exception e) {
        StringWriter text = new StringWriter();
        e.printStackTrace(new PrintWriter(text));
        return text.toString();
    }

    public static void main(String[] args) throws IOException {
        boolean leak = args[0].equals("leak");
        int count = Integer.parseInt(args[1]);
        long compressed = 0;
        for (int i = 0; i < count; i++) {
            String message = describe(new IllegalStateException("request " + i + " failed"));
            compressed += (leak ? logLeaky(message) : logFixed(message)).length;
        }
        System.out.println((leak ? "leaky" : "fixed") + ": " + count + " messages, " + compressed
                + " bytes compressed, " + pending.size() + " streams kept");
        if (args.length > 2 && args[2].equals("wait")) {
            while (System.in.read() >= 0) {
            }
        }
    }
}
