package org.elasticsearch.plugins;

import org.elasticsearch.common.settings.Settings;

import java.lang.reflect.Constructor;
import java.util.ArrayList;
import java.util.List;

/**
 * Plugins loaded from the class path instead of a plugins folder: the way Elastic's own test framework
 * runs a node in a test JVM. Lives in this package because LoadedPlugin and loadPlugin are package-private.
 */
public class ClassPathPluginsService extends PluginsService {
    private final List<LoadedPlugin> loaded = new ArrayList<>();

    public ClassPathPluginsService(Settings settings, PluginsLoader loader, List<Class<? extends Plugin>> classes) {
        super(settings, null, loader);
        for (Class<? extends Plugin> type : classes) {
            Plugin plugin = loadPlugin(type, settings, null);
            loaded.add(new LoadedPlugin(describe(type), plugin, type.getClassLoader()));
        }
    }

    @Override
    protected List<LoadedPlugin> plugins() {
        return loaded;
    }

    /** A descriptor for a class-path plugin. 9.x added a deployment target to the constructor; take whichever. */
    private static PluginDescriptor describe(Class<? extends Plugin> type) {
        String javaVersion = Integer.toString(Runtime.version().feature());
        Object[] common = {type.getName(), "class path plugin", "NA", org.elasticsearch.Build.current().version(),
                javaVersion, type.getName(), null, List.of(), false, false, false, false};
        for (Constructor<?> constructor : PluginDescriptor.class.getConstructors()) {
            Class<?>[] params = constructor.getParameterTypes();
            if (params.length < common.length || params[0] != String.class) {
                continue;
            }
            Object[] args = new Object[params.length];
            System.arraycopy(common, 0, args, 0, common.length);
            for (int i = common.length; i < params.length; i++) {
                args[i] = params[i].isEnum() ? enumConstant(params[i], "ALL") : null;
            }
            try {
                return (PluginDescriptor) constructor.newInstance(args);
            } catch (ReflectiveOperationException e) {
                throw new IllegalStateException("cannot describe plugin " + type.getName(), e);
            }
        }
        throw new IllegalStateException("no PluginDescriptor constructor fits this Elasticsearch version");
    }

    private static Object enumConstant(Class<?> type, String name) {
        for (Object constant : type.getEnumConstants()) {
            if (((Enum<?>) constant).name().equals(name)) {
                return constant;
            }
        }
        return null;
    }
}
