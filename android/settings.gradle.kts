// The Android side of fedp2eft: the library module (AAR) and a sample app. Not built in this
// repository's CI (no Android SDK there); see docs/mobile.md.
pluginManagement {
    repositories {
        google()
        mavenCentral()
        gradlePluginPortal()
    }
}

dependencyResolutionManagement {
    repositoriesMode.set(RepositoriesMode.FAIL_ON_PROJECT_REPOS)
    repositories {
        google()
        mavenCentral()
    }
}

rootProject.name = "fedp2eft-android"
include(":fedp2eft", ":sample")
