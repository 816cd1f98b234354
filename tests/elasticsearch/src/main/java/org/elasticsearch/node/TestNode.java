package org.elasticsearch.node;

import org.elasticsearch.action.admin.cluster.health.ClusterHealthResponse;
import org.elasticsearch.common.logging.LogConfigurator;
import org.elasticsearch.common.settings.Settings;
import org.elasticsearch.common.transport.TransportAddress;
import org.elasticsearch.core.TimeValue;
import org.elasticsearch.env.Environment;
import org.elasticsearch.http.HttpServerTransport;
import org.elasticsearch.plugins.ClassPathPluginsService;
import org.elasticsearch.plugins.PluginsLoader;
import org.elasticsearch.plugins.PluginsService;
import org.elasticsearch.transport.netty4.Netty4Plugin;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Comparator;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;

/**
 * A real Elasticsearch node in this JVM, HTTP on 127.0.0.1, for tests and development: a single-node cluster,
 * or one node of several when discovery.seed_hosts is given (-Ediscovery.seed_hosts=...,
 * -Ecluster.initial_master_nodes=..., -Enode.name=..., -Etransport.port=...; tests/es_node.py start_cluster).
 *
 * <pre>java -Xmx512m -cp CLASSPATH org.elasticsearch.node.TestNode [--port N] [--home DIR] [--owner PID] [-Ename=value ...]</pre>
 *
 * --port 0 (the default) takes a free port. Without --home the data lives in a temporary folder that is
 * removed at exit; with --home it is kept, so a node killed with SIGKILL can be started again on its data.
 * Prints one line, "elasticsearch VERSION ready at URL", once the cluster is at least yellow; stops on SIGTERM,
 * and when the process --owner names is gone (a test run that was killed leaves no node behind).
 * Lives in this package because NodeConstruction.prepareConstruction is package-private.
 */
public final class TestNode extends Node {

    private TestNode(Environment environment, PluginsLoader loader) {
        super(NodeConstruction.prepareConstruction(environment, loader, new NodeServiceProvider() {
            @Override
            PluginsService newPluginService(Environment env, PluginsLoader pluginsLoader) {
                // the HTTP transport is a module in Elastic's distribution; here it comes from the class path
                return new ClassPathPluginsService(env.settings(), pluginsLoader, List.of(Netty4Plugin.class));
            }
        }, true));
    }

    public static void main(String[] args) throws Exception {
        String port = "0";
        Path home = null;
        long owner = -1;
        Settings.Builder extra = Settings.builder();
        for (int i = 0; i < args.length; i++) {
            String arg = args[i];
            if (arg.equals("--port") && i + 1 < args.length) {
                port = args[++i];
            } else if (arg.equals("--home") && i + 1 < args.length) {
                home = Path.of(args[++i]).toAbsolutePath();
            } else if (arg.equals("--owner") && i + 1 < args.length) {
                owner = Long.parseLong(args[++i]);
            } else if (arg.startsWith("-E") && arg.contains("=")) {
                String[] pair = arg.substring(2).split("=", 2);
                extra.put(pair[0], pair[1]);
            } else {
                System.err.println("usage: TestNode [--port N] [--home DIR] [--owner PID] [-Ename=value ...]; not understood: " + arg);
                System.exit(2);
            }
        }
        boolean temporary = home == null;
        Path folder = temporary ? Files.createTempDirectory("lookalike-es-") : Files.createDirectories(home);

        Settings given = extra.build();
        Settings.Builder defaults = Settings.builder()
            .put("path.home", folder.toString())
            .put("cluster.name", "lookalike-test")
            .put("node.name", "lookalike-test");
        if (!given.hasValue("discovery.seed_hosts")) {
            defaults.put("discovery.type", "single-node");   // no seed hosts: a cluster of its own
        }
        Settings settings = defaults
            .put("network.host", "127.0.0.1")
            .put("http.port", port)
            .put("transport.port", "0")
            // a nearly full shared disk must not turn the test cluster read-only
            .put("cluster.routing.allocation.disk.threshold_enabled", false)
            .put("logger.level", "WARN")
            .put(given)
            .build();
        LogConfigurator.configureESLogging();
        LogConfigurator.configureWithoutConfig(settings);

        TestNode node = new TestNode(new Environment(settings, null),
            PluginsLoader.createPluginsLoader(Set.of(), Set.of(), Map.of(), false));  // false: the server is on the class path, not a module
        CountDownLatch stopped = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                node.close();
                node.awaitClose(30, TimeUnit.SECONDS);
                if (temporary) {
                    deleteTree(folder);
                }
            } catch (Exception e) {
                System.err.println("elasticsearch test node: clean-up failed: " + e);
            } finally {
                stopped.countDown();
            }
        }, "test-node-shutdown"));

        node.start();
        ClusterHealthResponse health = node.client().admin().cluster()
            .prepareHealth(TimeValue.timeValueSeconds(180)).setWaitForYellowStatus().setTimeout(TimeValue.timeValueSeconds(180)).get();
        if (health.isTimedOut()) {
            System.err.println("elasticsearch test node: cluster not yellow after 180 s (" + health.getStatus() + ")");
            System.exit(1);
        }
        TransportAddress address = node.injector().getInstance(HttpServerTransport.class).boundAddress().publishAddress();
        System.out.println("elasticsearch " + org.elasticsearch.Build.current().version() + " ready at http://"
            + address.getAddress() + ":" + address.getPort());
        System.out.flush();
        if (owner > 0) {
            watchOwner(owner);
        }
        stopped.await();
    }

    /** Exit (through the shutdown hook: node closed, temporary data removed) once the owner process is gone. */
    private static void watchOwner(long pid) {
        Thread watcher = new Thread(() -> {
            while (ProcessHandle.of(pid).map(ProcessHandle::isAlive).orElse(false)) {
                try {
                    Thread.sleep(2000);
                } catch (InterruptedException e) {
                    return;
                }
            }
            System.err.println("elasticsearch test node: owner process " + pid + " is gone, stopping");
            System.exit(0);
        }, "test-node-owner-watch");
        watcher.setDaemon(true);
        watcher.start();
    }

    private static void deleteTree(Path root) throws IOException {
        if (!Files.exists(root)) {
            return;
        }
        try (Stream<Path> paths = Files.walk(root)) {
            for (Path path : (Iterable<Path>) paths.sorted(Comparator.reverseOrder())::iterator) {
                Files.deleteIfExists(path);
            }
        }
    }
}
