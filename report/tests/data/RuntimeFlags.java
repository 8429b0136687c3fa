// What `tally run` gave a JVM: its pid, a system property the user set through JAVA_TOOL_OPTIONS,
// and whether the JVM got the flags that keep frame pointers and write a perf map at exit.
import java.lang.management.ManagementFactory;
import java.util.List;

public class RuntimeFlags {
    public static void main(String[] args) {
        List<String> flags = ManagementFactory.getRuntimeMXBean().getInputArguments();
        System.out.println("pid=" + ProcessHandle.current().pid());
        System.out.println("tally.test=" + System.getProperty("tally.test"));
        System.out.println("flags=" + String.join(" ", flags));
    }
}
