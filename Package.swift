// swift-tools-version:6.2
import PackageDescription

/// Settings every target of ours shares: Swift 6 mode plus the features that make the compiler
/// enforce import hygiene (see STYLE.md §1.3).
let strict: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
    .enableUpcomingFeature("InternalImportsByDefault"),
]

let package = Package(
    name: "nodeagent",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "nodeagent", targets: ["NodeAgent"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/swiftlang/swift-subprocess", from: "1.0.2"),
        // The daemon: HTTP on the WireGuard address, Prometheus metrics, one shutdown path.
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1", traits: []),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        // SHA-256 of downloads (K3s), dumps and applied objects; already in Hummingbird's graph.
        .package(url: "https://github.com/apple/swift-crypto", from: "4.5.2"),
        // The status server's connection guard: a channel handler in Hummingbird's pipeline.
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-extras", from: "1.35.2"),
        .package(url: "https://github.com/apple/swift-http-types", from: "1.8.0"),
    ],
    targets: [
        .systemLibrary(name: "CCurl", path: "Sources/CCurl", pkgConfig: "libcurl",
                       providers: [.apt(["libcurl4-openssl-dev"])]),
        .systemLibrary(name: "CYaml", path: "Sources/CYaml", pkgConfig: "yaml-0.1",
                       providers: [.apt(["libyaml-dev"])]),
        .systemLibrary(name: "CLibpq", path: "Sources/CLibpq", pkgConfig: "libpq",
                       providers: [.apt(["libpq-dev"])]),
        .target(name: "YAML", dependencies: ["CYaml"], swiftSettings: strict),
        .target(name: "KubeClient", dependencies: ["CCurl", "YAML"], swiftSettings: strict),
        .target(name: "Reconcilers", dependencies: [
            "YAML", "KubeClient", "CLibpq",
            .product(name: "Subprocess", package: "swift-subprocess"),
            .product(name: "Crypto", package: "swift-crypto"),
        ], swiftSettings: strict),
        .executableTarget(name: "NodeAgent", dependencies: [
            "YAML", "KubeClient", "Reconcilers",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "Prometheus", package: "swift-prometheus"),
            .product(name: "Metrics", package: "swift-metrics"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
        ], swiftSettings: strict),
        // Fixture paths and temp directories for the test targets.
        .target(name: "TestSupport", dependencies: ["Reconcilers"], path: "Tests/TestSupport", swiftSettings: strict),
        // libFuzzer targets (scripts/fuzz) and the regression tests that replay their corpora.
        .target(name: "FuzzTargets", dependencies: ["YAML", "KubeClient", "Reconcilers"], path: "Tests/FuzzTargets", swiftSettings: strict),
        .executableTarget(name: "Fuzz", dependencies: ["FuzzTargets", "YAML"], path: "Tests/Fuzz", exclude: ["seeds", "regressions"],
                          swiftSettings: strict),
        .testTarget(name: "YAMLTests", dependencies: ["YAML"], swiftSettings: strict),
        // A Kubernetes API server for tests (TLS by socat in front of an HTTP core).
        .target(name: "KubeTestServer", dependencies: ["YAML", "Reconcilers", "TestSupport"], path: "Tests/KubeTestServer",
                swiftSettings: strict),
        // The guest suite's stand-in K3s: the test API server playing `k3s server` (Tests/e2e).
        .executableTarget(name: "K3sStandIn", dependencies: ["KubeTestServer", "Reconcilers", "YAML"], path: "Tests/K3sStandIn",
                          swiftSettings: strict),
        .testTarget(name: "KubeClientTests", dependencies: ["KubeClient", "YAML", "TestSupport", "KubeTestServer"], swiftSettings: strict),
        .testTarget(name: "ReconcilersTests", dependencies: ["Reconcilers", "YAML", "TestSupport", "FuzzTargets"],
                    swiftSettings: strict),
        // Depends on the executable so `swift test` always builds the `nodeagent` binary it runs.
        .testTarget(name: "NodeAgentTests", dependencies: ["NodeAgent", "Reconcilers", "KubeClient", "YAML", "TestSupport", "KubeTestServer",
                                                          .product(name: "NIOEmbedded", package: "swift-nio"),
                                                          .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                                                          .product(name: "HTTPTypes", package: "swift-http-types")],
                    swiftSettings: strict),
    ]
)
