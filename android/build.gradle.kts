plugins {
    id("com.android.library") version "8.7.3" apply false
    id("com.android.application") version "8.7.3" apply false
    // The same Kotlin as the JVM check in CI (ffi/tests/kotlin/pom.xml).
    id("org.jetbrains.kotlin.android") version "2.4.21" apply false
}
