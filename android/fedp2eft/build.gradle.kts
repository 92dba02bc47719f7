// The fedp2eft AAR: the UniFFI Kotlin binding (generated), the coroutine wrapper (src/main/kotlin)
// and libfedp2eft_ffi.so per ABI. Run scripts/build-android.sh first: it fills
// src/generated/kotlin and src/main/jniLibs/<abi>/ (both gitignored).
import org.jetbrains.kotlin.gradle.dsl.JvmTarget

plugins {
    id("com.android.library")
    id("org.jetbrains.kotlin.android")
}

android {
    namespace = "org.fedp2eft"
    compileSdk = 35

    defaultConfig {
        minSdk = 26
        // Keep rules for JNA's reflection, applied to every app that shrinks with R8.
        consumerProguardFiles("consumer-rules.pro")
    }

    sourceSets {
        getByName("main") {
            kotlin.srcDirs("src/main/kotlin", "src/generated/kotlin")
            jniLibs.srcDirs("src/main/jniLibs")
        }
    }

    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }
}

kotlin {
    compilerOptions { jvmTarget.set(JvmTarget.JVM_17) }
}

dependencies {
    // @aar: JNA's Android flavour, with libjnidispatch.so for every ABI.
    api("net.java.dev.jna:jna:5.19.1@aar")
    api("org.jetbrains.kotlinx:kotlinx-coroutines-core:1.11.0")
    implementation("org.jetbrains.kotlinx:kotlinx-coroutines-android:1.11.0")
}
