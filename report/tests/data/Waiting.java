// A JVM that says it is ready and then waits (for `jcmd` tests): prints `ready <pid>`.
public class Waiting {
    public static void main(String[] args) throws InterruptedException {
        System.out.println("ready " + ProcessHandle.current().pid());
        System.out.flush();
        Thread.sleep(120_000);
    }
}
