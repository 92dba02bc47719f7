// swift-tools-version: 5.9
// fedp2eft for iOS: the UniFFI Swift binding (Sources/FedP2EFT/Generated, generated), an async
// wrapper (Personalizer+Async.swift) and the static library in FedP2EFTFFI.xcframework. Run
// scripts/build-ios.sh first: it writes both build outputs (gitignored). See docs/mobile.md.
import PackageDescription

let package = Package(
    name: "FedP2EFT",
    platforms: [.iOS(.v15)],
    products: [
        .library(name: "FedP2EFT", targets: ["FedP2EFT"]),
    ],
    targets: [
        .target(
            name: "FedP2EFT",
            dependencies: ["fedp2eft_ffiFFI"],
            path: "Sources/FedP2EFT"
        ),
        // The C module `fedp2eft_ffiFFI` (header + module map) and libfedp2eft_ffi.a for the
        // device (arm64) and the simulator (arm64 + x86_64).
        .binaryTarget(name: "fedp2eft_ffiFFI", path: "FedP2EFTFFI.xcframework"),
    ]
)
