/* The bridge API key: a secure setting in the Elasticsearch keystore, never in a pipeline. */
package org.bridge.elasticsearch;

import org.elasticsearch.common.settings.SecureSetting;
import org.elasticsearch.common.settings.SecureString;
import org.elasticsearch.common.settings.Setting;
import org.elasticsearch.common.settings.Settings;

import java.util.concurrent.atomic.AtomicReference;

/** Holds the current key; {@code _nodes/reload_secure_settings} replaces it without a restart. */
public final class ApiKey {
    /** {@code bin/elasticsearch-keystore add bridge.api_key} */
    public static final Setting<SecureString> SETTING = SecureSetting.secureString("bridge.api_key", null);

    private static final AtomicReference<String> CURRENT = new AtomicReference<>("");

    private ApiKey() {}

    /** Reads the key while the keystore is open (node start, or a reload request). */
    public static void load(Settings settings) {
        try (SecureString key = SETTING.get(settings)) {
            CURRENT.set(key.toString());
        }
    }

    /** The key to send, or "" when none is configured. */
    public static String current() {
        return CURRENT.get();
    }
}
