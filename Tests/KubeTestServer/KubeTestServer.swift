import Foundation
import Synchronization
public import Reconcilers
import TestSupport
public import YAML

/// A Kubernetes API server for tests that speaks the real protocol: HTTPS with its own CA and
/// client-certificate verification (socat terminates TLS in front of an HTTP core), bearer
/// tokens, an in-memory store with resourceVersion and uid, get/list (label selectors,
/// pagination)/create/delete/server-side apply (field managers, conflicts, force, dry run),
/// real `Status` bodies, discovery documents for built-in and registered kinds, and faults to
/// inject, watches (with bookmarks, 410 Expired after `compact()`, dropped connections).
public final class KubeTestServer: @unchecked Sendable {
    public struct ResourceType: Sendable, Equatable {
        public var group: String
        public var version: String
        public var kind: String
        public var plural: String
        public var namespaced: Bool
        var groupVersion: String { group.isEmpty ? version : "\(group)/\(version)" }

        public init(group: String, version: String, kind: String, plural: String, namespaced: Bool) {
            (self.group, self.version, self.kind, self.plural, self.namespaced) = (group, version, kind, plural, namespaced)
        }
    }

    struct Key: Hashable {
        var resource: String
        var groupVersion: String
        var namespace: String
        var name: String
    }

    struct Stored {
        var object: JSONValue
        /// Field manager → the leaf paths it owns through apply.
        var owners: [String: Set<[String]>]
    }

    struct State {
        var types: [ResourceType]
        var objects: [Key: Stored] = [:]
        var order: [Key] = []
        var resourceVersion = 100
        var failures: [(status: Int, retryAfter: Int?)] = []
        var delays: [Duration] = []
        var requests: [String] = []
        /// Every change, in order, for watches.
        var events: [(rv: Int, type: String, key: Key, object: JSONValue)] = []
        /// Watches from a resourceVersion below this get 410 Expired.
        var compactedBelow = 0
        /// Bumped to end every open watch (a dropped connection).
        var watchGeneration = 0
        /// Watches streaming now, and the newest resourceVersion any of them has sent.
        var openWatches = 0
        var delivered = 0
        /// Pod logs by "namespace/pod".
        var logs: [String: String] = [:]
        /// Structural schemas of custom resources, by "GROUPVERSION/PLURAL": applies are pruned
        /// by them, honouring `fieldValidation`, as kube-apiserver does.
        var schemas: [String: StructuralSchema] = [:]
        /// What `GET /version` says.
        var gitVersion = "v1.31.4+k3s1"
    }

    public let tls: TLSPaths
    /// `https://127.0.0.1:PORT`, demanding a client certificate from the test CA.
    public private(set) var url = ""
    /// The same API, for bearer tokens (TLS without a client certificate).
    public private(set) var tokenURL = ""
    public let token = "test-token-\(UInt32.random(in: 0...UInt32.max))"
    /// A token allowed to read but not to write: writes get 403 Forbidden.
    public let readOnlyToken = "read-only-\(UInt32.random(in: 0...UInt32.max))"
    let state: Mutex<State>
    private var servers: [HTTPServer] = []
    private var proxies: [Int32] = []

    public struct TLSPaths: Sendable {
        public var directory: String
        public func pem(_ name: String) -> [UInt8] { Array((try? Data(contentsOf: URL(fileURLWithPath: "\(directory)/\(name)"))) ?? Data()) }
    }

    public static let builtIn = [
        ResourceType(group: "", version: "v1", kind: "Namespace", plural: "namespaces", namespaced: false),
        ResourceType(group: "", version: "v1", kind: "ConfigMap", plural: "configmaps", namespaced: true),
        ResourceType(group: "", version: "v1", kind: "Secret", plural: "secrets", namespaced: true),
        ResourceType(group: "", version: "v1", kind: "Node", plural: "nodes", namespaced: false),
        ResourceType(group: "", version: "v1", kind: "Pod", plural: "pods", namespaced: true),
        ResourceType(group: "batch", version: "v1", kind: "Job", plural: "jobs", namespaced: true),
        ResourceType(group: "apps", version: "v1", kind: "Deployment", plural: "deployments", namespaced: true),
        ResourceType(group: "apps", version: "v1", kind: "StatefulSet", plural: "statefulsets", namespaced: true),
        ResourceType(group: "apps", version: "v1", kind: "DaemonSet", plural: "daemonsets", namespaced: true),
        ResourceType(group: "apiextensions.k8s.io", version: "v1", kind: "CustomResourceDefinition",
                     plural: "customresourcedefinitions", namespaced: false),
        ResourceType(group: "coordination.k8s.io", version: "v1", kind: "Lease", plural: "leases", namespaced: true),
        ResourceType(group: "", version: "v1", kind: "Service", plural: "services", namespaced: true),
        ResourceType(group: "", version: "v1", kind: "Endpoints", plural: "endpoints", namespaced: true),
        ResourceType(group: "helm.cattle.io", version: "v1", kind: "HelmChartConfig", plural: "helmchartconfigs", namespaced: true),
    ]

    /// helm.cattle.io/v1 HelmChart, served once a test registers it (K3s always has it).
    public static let helmChart = ResourceType(group: "helm.cattle.io", version: "v1", kind: "HelmChart", plural: "helmcharts", namespaced: true)
    public static let helmChartConfig = ResourceType(group: "helm.cattle.io", version: "v1", kind: "HelmChartConfig", plural: "helmchartconfigs",
                                                     namespaced: true)
    /// argoproj.io/v1alpha1 Application, served once Argo CD's CRD is "installed".
    public static let application = ResourceType(group: "argoproj.io", version: "v1alpha1", kind: "Application", plural: "applications",
                                                 namespaced: true)
    /// argoproj.io/v1alpha1 AppProject, from the same chart.
    public static let appProject = ResourceType(group: "argoproj.io", version: "v1alpha1", kind: "AppProject", plural: "appprojects",
                                                namespaced: true)

    public let clock: any WallClock

    /// - Parameters:
    ///   - pkiScript: the program that makes the CA and certificates (`Tests/Fixtures/pki/make.py`).
    ///   - port: the client-certificate port; a free one when nil.
    ///   - clock: what object times (creationTimestamp, managedFields) are read from: a
    ///     manual clock lets a test move past a whole second instead of sleeping.
    public init(pkiScript: String? = nil, port: Int? = nil, clock: any WallClock = SystemWallClock()) async throws {
        self.clock = clock
        let pkiScript = pkiScript ?? Fixtures.repository + "/Tests/Fixtures/pki/make.py"
        let dir = Fixtures.temporaryDirectory()
        try await SystemCommandRunner().check(Command("python3", [pkiScript, dir], timeout: .seconds(120)))
        tls = TLSPaths(directory: dir)
        state = Mutex(State(types: Self.builtIn))
        // Weak: a connection still being served when the test lets the server go gets a 503,
        // not a read of a freed object.
        let gone = HTTPServer.Response.full(status: 503, headers: [], body: Array("the test API server is gone\n".utf8))
        let certified = try HTTPServer { [weak self] in self?.handle($0, clientCertificate: true) ?? gone }
        let tokened = try HTTPServer { [weak self] in self?.handle($0, clientCertificate: false) ?? gone }
        servers = [certified, tokened]
        // TLS 1.2: socat 1.7.4's TLS 1.3 path holds the first response of every connection
        // back by about 40 ms (measured; s_server and TLS 1.2 answer in under 2 ms), which
        // would stand out as the client's cost in the benchmark.
        let common = "cert=\(dir)/server.pem,key=\(dir)/server.key,cafile=\(dir)/ca.pem,reuseaddr,fork,openssl-max-proto-version=TLS1.2"
        var started: [Int] = []
        for (i, (verify, backend)) in [("verify=1", certified.port), ("verify=0", tokened.port)].enumerated() {
            // A free port can be taken by another test between the probe and socat's bind:
            // then socat exits at once, and another port is tried (a fixed port is not).
            var listening: Int?
            var why = ""
            for attempt in 0..<3 where listening == nil {
                let candidate = i == 0 ? (port ?? TLSTestPeer.freePort()) : TLSTestPeer.freePort()
                let log = "\(dir)/socat-\(i)-\(attempt).log"
                let pid = try DetachedProcess.spawn(["/usr/bin/socat", "OPENSSL-LISTEN:\(candidate),\(common),\(verify)", "TCP:127.0.0.1:\(backend),nodelay"],
                                                    output: log)
                proxies.append(pid)
                // Up to 15 s: socat starts in milliseconds, but a loaded machine can take seconds.
                for _ in 0..<500 where listening == nil && DetachedProcess.isRunning(pid) {
                    if TLSTestPeer.canConnect(candidate) { listening = candidate } else { try await Task.sleep(for: .milliseconds(30)) }
                }
                if listening == nil {
                    why = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
                    DetachedProcess.stop(pid)
                    if port != nil, i == 0 { break }
                }
            }
            guard let listening else {
                stop()
                throw CommandError(code: .failed, command: "socat", message: "the TLS proxy did not start: \(why.isEmpty ? "no output" : why)")
            }
            started.append(listening)
        }
        url = "https://127.0.0.1:\(started[0])"
        tokenURL = "https://127.0.0.1:\(started[1])"
    }

    public func stop() {
        for pid in proxies { DetachedProcess.stop(pid) }
        proxies = []
        for s in servers { s.stop() }
        servers = []
        try? FileManager.default.removeItem(atPath: tls.directory)
    }

    /// Serves a new kind, as an established CRD would; with a schema, its objects are pruned
    /// by it.
    public func register(_ type: ResourceType, schema: StructuralSchema? = nil) {
        state.withLock { s in
            if !s.types.contains(type) { s.types.append(type) }
            if let schema { s.schemas["\(type.groupVersion)/\(type.plural)"] = schema }
        }
    }

    /// The K3s version `GET /version` reports.
    public var gitVersion: String {
        get { state.withLock { $0.gitVersion } }
        set { state.withLock { $0.gitVersion = newValue } }
    }

    /// Serves HelmChart and HelmChartConfig as the helm-controller `version` does: their kinds,
    /// their schemas (applies are pruned by them), and their CRD objects with those schemas, as
    /// K3s creates them at start-up.
    public func serveHelmCRDs(_ version: HelmControllerVersion) {
        let crd = Self.builtIn.first { $0.plural == "customresourcedefinitions" }!
        for (type, schema) in [(Self.helmChart, version.helmChart), (Self.helmChartConfig, version.helmChartConfig)] {
            register(type, schema: schema)
            put(crd, .object([
                "apiVersion": .string("apiextensions.k8s.io/v1"), "kind": .string("CustomResourceDefinition"),
                "metadata": .object(["name": .string("\(type.plural).\(type.group)")]),
                "spec": .object([
                    "group": .string(type.group), "scope": .string("Namespaced"),
                    "names": .object(["kind": .string(type.kind), "plural": .string(type.plural)]),
                    "versions": .array([.object(["name": .string(type.version), "served": .bool(true), "storage": .bool(true),
                                                 "schema": .object(["openAPIV3Schema": schema.openAPIV3])])]),
                ]),
                "status": .object(["conditions": .array([.object(["type": .string("Established"), "status": .string("True")])])]),
            ]))
        }
    }

    /// The next `count` requests get `status` (429 or 503, say), with `Retry-After` if given.
    public func failNext(_ count: Int, status: Int, retryAfter: Int? = nil) {
        state.withLock { s in for _ in 0..<count { s.failures.append((status, retryAfter)) } }
    }

    /// Waits (up to 20 s) until `count` watches are open and every change so far was sent to
    /// them: what a test waits for instead of sleeping before it changes something.
    public func waitForWatches(_ count: Int = 1) async throws {
        for _ in 0..<1000 {
            if state.withLock({ $0.openWatches >= count && $0.delivered >= $0.events.last.map(\.rv) ?? 0 }) { return }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw TestServerError(message: "\(count) watch(es) did not connect and catch up")
    }

    public struct TestServerError: Error, CustomStringConvertible {
        public var message: String
        public var description: String { message }
    }

    /// Ends every open watch connection, as a restarting API server or a proxy would.
    public func dropWatches() {
        state.withLock { $0.watchGeneration += 1 }
    }

    /// Forgets the event history: a watch from an older resourceVersion gets 410 Expired.
    public func compact() {
        state.withLock { $0.compactedBelow = $0.resourceVersion + 1 }
    }

    /// Drops every watch, stores `object`, and forgets the history, as one step: no open watch
    /// can deliver the change, and a watch resuming from before it gets 410 Expired.
    public func dropWatchesThenChangeAndCompact(_ type: ResourceType, namespace: String = "", _ object: JSONValue) {
        state.withLock { $0.watchGeneration += 1 }
        put(type, namespace: namespace, object)
        compact()
    }

    /// Creates or replaces an object as another client would (no field manager), for tests.
    public func put(_ type: ResourceType, namespace: String = "", _ object: JSONValue) {
        let name = object[["metadata", "name"]]?.string ?? ""
        let key = Key(resource: type.plural, groupVersion: type.groupVersion, namespace: namespace, name: name)
        state.withLock { s in
            s.resourceVersion += 1
            var o = object
            o[["metadata", "resourceVersion"]] = .string(String(s.resourceVersion))
            if o[["metadata", "creationTimestamp"]] == nil {
                o[["metadata", "creationTimestamp"]] = s.objects[key]?.object[["metadata", "creationTimestamp"]] ?? .string(self.now())
            }
            let isNew = s.objects[key] == nil
            if isNew { s.order.append(key) }
            s.objects[key] = Stored(object: o, owners: s.objects[key]?.owners ?? [:])
            s.events.append((s.resourceVersion, isNew ? "ADDED" : "MODIFIED", key, o))
        }
    }

    /// What `GET …/pods/POD/log` returns for a pod.
    public func setLog(namespace: String, pod: String, _ text: String) {
        state.withLock { $0.logs["\(namespace)/\(pod)"] = text }
    }

    /// Removes an object as another client would.
    public func remove(_ type: ResourceType, namespace: String = "", name: String) {
        _ = delete(type, namespace: namespace, name: name)
    }

    /// The next `count` requests wait `delay` before they are answered.
    public func delayNext(_ count: Int, by delay: Duration) {
        state.withLock { s in for _ in 0..<count { s.delays.append(delay) } }
    }

    /// TCP connections the API has accepted (behind TLS), to see keep-alive at work.
    public var connections: Int { servers.reduce(0) { $0 + $1.connections } }

    /// "METHOD PATH" of every request served so far.
    public var requests: [String] { state.withLock { $0.requests } }

    /// Every stored object of a type in a namespace, in creation order.
    public func objects(_ type: ResourceType, namespace: String = "") -> [JSONValue] {
        state.withLock { s in
            s.order.filter { $0.resource == type.plural && $0.groupVersion == type.groupVersion && $0.namespace == namespace }
                .compactMap { s.objects[$0]?.object }
        }
    }

    public func object(_ plural: String, namespace: String = "", name: String, groupVersion: String = "v1") -> JSONValue? {
        state.withLock { $0.objects[Key(resource: plural, groupVersion: groupVersion, namespace: namespace, name: name)]?.object }
    }

    // MARK: - Requests

    func handle(_ request: HTTPServer.Request, clientCertificate: Bool) -> HTTPServer.Response {
        state.withLock { $0.requests.append("\(request.method) \(request.path)") }
        if let delay = state.withLock({ s in s.delays.isEmpty ? nil : s.delays.removeFirst() }) {
            usleep(UInt32(delay.components.seconds * 1_000_000 + delay.components.attoseconds / 1_000_000_000_000))
        }
        let authorization = request.headers["authorization"]
        if !clientCertificate, authorization != "Bearer \(token)", authorization != "Bearer \(readOnlyToken)" {
            return status(401, "Unauthorized", "Unauthorized")
        }
        if !clientCertificate, authorization == "Bearer \(readOnlyToken)", !["GET", "HEAD"].contains(request.method) {
            return status(403, "Forbidden", "User \"read-only\" cannot \(request.method.lowercased()) resource \"\(request.path)\"")
        }
        if let failure = state.withLock({ s in s.failures.isEmpty ? nil : s.failures.removeFirst() }) {
            var r = status(failure.status, failure.status == 429 ? "TooManyRequests" : "ServiceUnavailable", "injected failure")
            if let after = failure.retryAfter, case .full(let code, var headers, let body) = r {
                headers.append(("Retry-After", String(after)))
                r = .full(status: code, headers: headers, body: body)
            }
            return r
        }
        if request.path == "/readyz" || request.path == "/livez" {
            return .full(status: 200, headers: [("Content-Type", "text/plain")], body: Array("ok".utf8))
        }
        if request.path == "/version" {
            return json(200, .object(["major": .string("1"), "minor": .string("31"), "gitVersion": .string(gitVersion),
                                      "platform": .string("linux/amd64")]))
        }
        if request.path == "/api" {
            return json(200, .object(["kind": .string("APIVersions"), "versions": .array([.string("v1")])]))
        }
        if request.path == "/apis" { return json(200, groupList()) }
        let segments = request.path.split(separator: "/").map(String.init)
        guard let (groupVersion, rest) = Self.splitGroupVersion(segments) else {
            return status(404, "NotFound", "the server could not find the requested resource")
        }
        let types = state.withLock { $0.types.filter { $0.groupVersion == groupVersion } }
        guard !types.isEmpty else { return status(404, "NotFound", "the server could not find the requested resource") }
        if rest.isEmpty { return json(200, resourceList(groupVersion, types)) }
        var namespace = "", resource = rest[0], name: String? = rest.count > 1 ? rest[1] : nil
        if rest.count >= 3, rest[0] == "namespaces", types.contains(where: { $0.plural == rest[2] && $0.namespaced }) {
            namespace = rest[1]
            resource = rest[2]
            name = rest.count > 3 ? rest[3] : nil
        }
        guard let type = types.first(where: { $0.plural == resource }) else {
            return status(404, "NotFound", "the server could not find the requested resource")
        }
        if rest.count == 5, rest[4] == "log", resource == "pods", let name, request.method == "GET" {
            guard state.withLock({ $0.objects[Key(resource: "pods", groupVersion: "v1", namespace: namespace, name: name)] }) != nil else {
                return notFound(type, name)
            }
            let text = state.withLock { $0.logs["\(namespace)/\(name)"] } ?? ""
            let tail = Int(request.query["tailLines"] ?? "") ?? Int.max
            let lines = text.split(separator: "\n", omittingEmptySubsequences: false).suffix(tail)
            return .full(status: 200, headers: [("Content-Type", "text/plain")], body: Array(lines.joined(separator: "\n").utf8))
        }
        if rest.count > (namespace.isEmpty ? 2 : 4) {
            return status(404, "NotFound", "the server could not find the requested resource (subresources other than pods/log are not served)")
        }
        switch (request.method, name) {
        case ("GET", nil) where ["true", "1"].contains(request.query["watch"] ?? ""): return watch(type, namespace: namespace, request)
        case ("GET", nil): return list(type, namespace: namespace, request)
        case ("GET", let name?): return get(type, namespace: namespace, name: name)
        case ("DELETE", let name?): return delete(type, namespace: namespace, name: name)
        case ("PATCH", let name?) where request.headers["content-type"]?.hasPrefix("application/merge-patch+json") == true:
            return mergePatch(type, namespace: namespace, name: name, request)
        case ("PATCH", let name?): return apply(type, namespace: namespace, name: name, request)
        default: return status(405, "MethodNotAllowed", "\(request.method) is not supported here")
        }
    }

    static func splitGroupVersion(_ s: [String]) -> (String, [String])? {
        if s.count >= 2, s[0] == "api" { return (s[1], Array(s.dropFirst(2))) }
        if s.count >= 3, s[0] == "apis" { return ("\(s[1])/\(s[2])", Array(s.dropFirst(3))) }
        return nil
    }

    func get(_ type: ResourceType, namespace: String, name: String) -> HTTPServer.Response {
        let key = Key(resource: type.plural, groupVersion: type.groupVersion, namespace: namespace, name: name)
        guard let stored = state.withLock({ $0.objects[key] }) else { return notFound(type, name) }
        return json(200, stored.object)
    }

    func list(_ type: ResourceType, namespace: String, _ request: HTTPServer.Request) -> HTTPServer.Response {
        let selector = (request.query["labelSelector"] ?? "").split(separator: ",").compactMap { term -> (String, String, Bool)? in
            if let r = term.range(of: "!=") { return (String(term[..<r.lowerBound]), String(term[r.upperBound...]), false) }
            let kv = term.split(separator: "=", maxSplits: 1).map(String.init)
            return kv.count == 2 ? (kv[0], kv[1].hasPrefix("=") ? String(kv[1].dropFirst()) : kv[1], true) : nil
        }
        let (items, rv) = state.withLock { s -> ([JSONValue], Int) in
            let matching = s.order.filter { $0.resource == type.plural && $0.groupVersion == type.groupVersion && (namespace.isEmpty || $0.namespace == namespace) }
                .compactMap { s.objects[$0]?.object }
                .filter { o in selector.allSatisfy { (k, v, equal) in (o[["metadata", "labels", k]]?.string == v) == equal } }
            return (matching, s.resourceVersion)
        }
        let start = Int(request.query["continue"] ?? "") ?? 0
        let limit = Int(request.query["limit"] ?? "") ?? Int.max
        let page = Array(items.dropFirst(start).prefix(limit))
        var metadata: [JSONValue.Member] = [.init("resourceVersion", .string(String(rv)))]
        if start + page.count < items.count { metadata.append(.init("continue", .string(String(start + page.count)))) }
        return json(200, .object(["kind": .string("\(type.kind)List"), "apiVersion": .string(type.groupVersion),
                                  "metadata": .object(metadata), "items": .array(page)]))
    }

    /// A watch: newline-delimited JSON events in a chunked body, from `resourceVersion` on (or,
    /// without one, the current objects as ADDED first); ERROR 410 Expired when that version
    /// is no longer in the history; BOOKMARK events when asked for.
    func watch(_ type: ResourceType, namespace: String, _ request: HTTPServer.Request) -> HTTPServer.Response {
        let from = Int(request.query["resourceVersion"] ?? "") ?? 0
        let bookmarks = request.query["allowWatchBookmarks"] == "true"
        let timeout = Double(request.query["timeoutSeconds"] ?? "") ?? 3600
        let matches: @Sendable (Key) -> Bool = { k in
            k.resource == type.plural && k.groupVersion == type.groupVersion && (namespace.isEmpty || k.namespace == namespace)
        }
        return .stream(status: 200, headers: [("Content-Type", "application/json")]) { [self] write in
            func send(_ kind: String, _ object: JSONValue) -> Bool {
                write(Array((JSONValue.object(["type": .string(kind), "object": object]).jsonText + "\n").utf8))
            }
            let (generation, compacted, current, now) = state.withLock { s in
                (s.watchGeneration, s.compactedBelow, s.order.filter(matches).compactMap { s.objects[$0]?.object }, s.resourceVersion)
            }
            var last = from
            if from == 0 {
                for o in current { guard send("ADDED", o) else { return } }
                last = now
            } else if from < compacted {
                _ = send("ERROR", .object(["kind": .string("Status"), "apiVersion": .string("v1"), "metadata": .object([]),
                                           "status": .string("Failure"), "message": .string("too old resource version: \(from) (\(compacted))"),
                                           "reason": .string("Expired"), "code": .int(410)]))
                return
            }
            if bookmarks {
                guard send("BOOKMARK", .object(["kind": .string(type.kind), "apiVersion": .string(type.groupVersion),
                                                "metadata": .object(["resourceVersion": .string(String(max(last, now)))])])) else { return }
            }
            state.withLock { $0.openWatches += 1 }
            defer { state.withLock { $0.openWatches -= 1 } }
            let deadline = ContinuousClock.now + .milliseconds(Int64(timeout * 1000))
            while ContinuousClock.now < deadline {
                let (events, gen, newest) = state.withLock { s in
                    (s.events.filter { $0.rv > last && matches($0.key) }, s.watchGeneration, s.events.last?.rv ?? 0)
                }
                if gen != generation { return }
                for e in events {
                    guard send(e.type, e.object) else { return }
                    last = e.rv
                }
                // Everything up to `newest` that this watch matches was sent.
                state.withLock { $0.delivered = max($0.delivered, newest) }
                usleep(20_000)
            }
        }
    }

    func delete(_ type: ResourceType, namespace: String, name: String) -> HTTPServer.Response {
        let key = Key(resource: type.plural, groupVersion: type.groupVersion, namespace: namespace, name: name)
        let removed = state.withLock { s -> JSONValue? in
            guard let stored = s.objects.removeValue(forKey: key) else { return nil }
            s.order.removeAll { $0 == key }
            s.resourceVersion += 1
            var gone = stored.object
            gone[["metadata", "resourceVersion"]] = .string(String(s.resourceVersion))
            s.events.append((s.resourceVersion, "DELETED", key, gone))
            return stored.object
        }
        guard let removed else { return notFound(type, name) }
        return json(200, removed)
    }

    /// Server-side apply: the patch's fields become the manager's; fields it owned before and no
    /// longer sets are removed; a field another manager owns with a different value is a 409
    /// conflict unless `force=true`, which takes it over.
    func apply(_ type: ResourceType, namespace: String, name: String, _ request: HTTPServer.Request) -> HTTPServer.Response {
        guard request.headers["content-type"]?.hasPrefix("application/apply-patch+yaml") == true else {
            return status(415, "UnsupportedMediaType", "only application/apply-patch+yaml is supported")
        }
        guard let manager = request.query["fieldManager"], !manager.isEmpty else {
            return status(422, "Invalid", "fieldManager is required for apply requests")
        }
        guard var patch = JSONValue.parse(request.body), patch.members != nil else {
            return status(400, "BadRequest", "the body is not a YAML or JSON object")
        }
        guard patch[["kind"]]?.string == type.kind, patch[["apiVersion"]]?.string == type.groupVersion,
              patch[["metadata", "name"]]?.string == name else {
            return status(400, "BadRequest", "apiVersion, kind and metadata.name must match the URL")
        }
        guard Self.isDNSSubdomain(name) else { return status(422, "Invalid", "metadata.name: Invalid value: \"\(name)\"") }
        if type.namespaced { patch[["metadata", "namespace"]] = .string(namespace) }
        // Server-side apply types the patch by the schema first: a field the schema does not
        // declare fails the request whatever fieldValidation says, and kube-apiserver (1.31
        // to 1.36) answers it with HTTP 500 and no reason (structuredmerge.go returns a plain
        // error: kubernetes/kubernetes#122480, #139253). Only other writes are pruned.
        if let schema = state.withLock({ $0.schemas["\(type.groupVersion)/\(type.plural)"] }) {
            let unknown = schema.prune(patch, at: "").1
            if !unknown.isEmpty {
                return json(500, .object(["kind": .string("Status"), "apiVersion": .string("v1"), "metadata": .object([]),
                                          "status": .string("Failure"),
                                          "message": .string("failed to create typed patch object (\(namespace)/\(name); \(type.groupVersion), Kind=\(type.kind)): "
                                              + unknown.map { ".\($0): field not declared in schema" }.joined(separator: ", ")),
                                          "code": .int(500)]))
            }
        }
        let warnings: [(String, String)] = []
        let force = request.query["force"] == "true"
        let dryRun = request.query["dryRun"] == "All"
        let key = Key(resource: type.plural, groupVersion: type.groupVersion, namespace: namespace, name: name)
        let response = state.withLock { s -> HTTPServer.Response in
            let existing = s.objects[key]
            var owners = existing?.owners ?? [:]
            let paths = Set(patch.leafPaths.filter { !Self.identityPaths.contains($0) })
            var object = existing?.object ?? .object([])
            // Conflicts: a field owned by someone else whose value this patch changes.
            var conflicts: [String] = []
            for (other, owned) in owners where other != manager {
                for path in paths.intersection(owned) where object[path] != patch[path] {
                    conflicts.append("\(other): .\(path.joined(separator: "."))")
                }
            }
            if !conflicts.isEmpty, !force {
                return status(409, "Conflict", "Apply failed with \(conflicts.count) conflict(s): \(conflicts.sorted().joined(separator: "; "))")
            }
            for other in owners.keys where other != manager { owners[other]?.subtract(paths) }
            // Fields this manager set before but not now go, unless another manager holds them.
            let others = owners.filter { $0.key != manager }.values.reduce(Set<[String]>()) { $0.union($1) }
            for path in (owners[manager] ?? []).subtracting(paths) where !others.contains(path) { object[path] = nil }
            owners[manager] = paths
            object = object.merging(patch)
            let old = existing.map { Self.comparable($0.object) }
            if let existing, old == Self.comparable(object) {
                return json(200, existing.object)   // idempotent: nothing changes, not even resourceVersion
            }
            let rv = dryRun ? s.resourceVersion : s.resourceVersion + 1
            object[["metadata", "resourceVersion"]] = .string(String(rv))
            object[["metadata", "uid"]] = existing?.object[["metadata", "uid"]] ?? .string(UUID().uuidString.lowercased())
            object[["metadata", "creationTimestamp"]] = existing?.object[["metadata", "creationTimestamp"]] ?? .string(self.now())
            object[["metadata", "managedFields"]] = .array(owners.keys.sorted().map { m in
                .object(["manager": .string(m), "operation": .string("Apply"), "apiVersion": .string(type.groupVersion),
                         "time": .string(self.now()),
                         "fieldsType": .string("FieldsV1"), "fieldsV1": Self.fieldsV1(owners[m] ?? [])])
            })
            if !dryRun {
                s.resourceVersion = rv
                if existing == nil { s.order.append(key) }
                s.objects[key] = Stored(object: object, owners: owners)
                s.events.append((rv, existing == nil ? "ADDED" : "MODIFIED", key, object))
            }
            return json(existing == nil ? 201 : 200, object)
        }
        guard !warnings.isEmpty, case .full(let code, let headers, let body) = response else { return response }
        return .full(status: code, headers: headers + warnings, body: body)
    }

    /// A JSON merge patch (RFC 7386) of an existing object, pruned by the kind's structural
    /// schema as `fieldValidation` asks (kube-apiserver's default is Warn): Strict refuses with
    /// 400 BadRequest naming every unknown field; Warn prunes and says so in a `Warning` header
    /// per field; Ignore prunes silently (the Kubernetes API reference, `fieldValidation`).
    func mergePatch(_ type: ResourceType, namespace: String, name: String, _ request: HTTPServer.Request) -> HTTPServer.Response {
        guard let patch = JSONValue.parse(request.body), patch.members != nil else {
            return status(400, "BadRequest", "the body is not a JSON object")
        }
        let key = Key(resource: type.plural, groupVersion: type.groupVersion, namespace: namespace, name: name)
        guard let existing = state.withLock({ $0.objects[key] }) else { return notFound(type, name) }
        var object = Self.mergePatched(existing.object, patch)
        var warnings: [(String, String)] = []
        if let schema = state.withLock({ $0.schemas["\(type.groupVersion)/\(type.plural)"] }) {
            let (pruned, unknown) = schema.prune(object, at: "")
            if !unknown.isEmpty {
                switch request.query["fieldValidation"] ?? "Warn" {
                case "Strict":
                    return status(400, "BadRequest", "strict decoding error: " + unknown.map { "unknown field \"\($0)\"" }.joined(separator: ", "))
                case "Ignore":
                    break
                default:
                    warnings = unknown.map { ("Warning", "299 - \"unknown field \\\"\($0)\\\"\"") }
                }
            }
            object = pruned
        }
        put(type, namespace: namespace, object)
        let stored = state.withLock { $0.objects[key]?.object } ?? object
        guard case .full(let code, let headers, let body) = json(200, stored) else { return json(200, stored) }
        return .full(status: code, headers: headers + warnings, body: body)
    }

    /// RFC 7386: objects merge key by key, `null` removes, anything else replaces.
    static func mergePatched(_ target: JSONValue, _ patch: JSONValue) -> JSONValue {
        guard case .object(let over) = patch else { return patch }
        var out: [JSONValue.Member] = target.members ?? []
        for m in over {
            if m.value == .null {
                out.removeAll { $0.key == m.key }
            } else if let i = out.firstIndex(where: { $0.key == m.key }) {
                out[i].value = mergePatched(out[i].value, m.value)
            } else {
                out.append(.init(m.key, mergePatched(.null, m.value)))
            }
        }
        return .object(out)
    }

    /// The wall-clock time as Kubernetes writes it.
    /// The server's time, as Kubernetes writes it (whole seconds).
    public func now() -> String { clock.now().rfc3339 }

    static let identityPaths: Set<[String]> = [["apiVersion"], ["kind"], ["metadata", "name"], ["metadata", "namespace"]]

    static func comparable(_ o: JSONValue) -> JSONValue {
        var c = o
        c[["metadata", "managedFields"]] = nil
        c[["metadata", "resourceVersion"]] = nil
        return c
    }

    static func fieldsV1(_ paths: Set<[String]>) -> JSONValue {
        var out = JSONValue.object([])
        for path in paths.sorted(by: { $0.lexicographicallyPrecedes($1) }) { out[path.map { "f:\($0)" }] = .object([]) }
        return out
    }

    static func isDNSSubdomain(_ name: String) -> Bool {
        !name.isEmpty && name.count <= 253 && name.allSatisfy { $0.isLowercase || $0.isNumber || $0 == "-" || $0 == "." }
            && name.first!.isLetter || name.first!.isNumber
    }

    // MARK: - Documents

    func groupList() -> JSONValue {
        let types = state.withLock { $0.types.filter { !$0.group.isEmpty } }
        var groups: [String: [String]] = [:]
        for t in types where !(groups[t.group]?.contains(t.version) ?? false) { groups[t.group, default: []].append(t.version) }
        return .object(["kind": .string("APIGroupList"), "apiVersion": .string("v1"), "groups": .array(groups.keys.sorted().map { g in
            let versions = groups[g]!.map { JSONValue.object(["groupVersion": .string("\(g)/\($0)"), "version": .string($0)]) }
            return .object(["name": .string(g), "versions": .array(versions), "preferredVersion": versions[0]])
        })])
    }

    func resourceList(_ groupVersion: String, _ types: [ResourceType]) -> JSONValue {
        .object(["kind": .string("APIResourceList"), "apiVersion": .string("v1"), "groupVersion": .string(groupVersion),
                 "resources": .array(types.map { t in
                     .object(["name": .string(t.plural), "singularName": .string(t.kind.lowercased()), "namespaced": .bool(t.namespaced),
                              "kind": .string(t.kind),
                              "verbs": .array(["create", "delete", "get", "list", "patch", "update", "watch"].map(JSONValue.string))])
                 })])
    }

    func notFound(_ type: ResourceType, _ name: String) -> HTTPServer.Response {
        status(404, "NotFound", "\(type.plural)\(type.group.isEmpty ? "" : ".\(type.group)") \"\(name)\" not found",
               details: .object(["name": .string(name), "group": .string(type.group), "kind": .string(type.plural)]))
    }

    func status(_ code: Int, _ reason: String, _ message: String, details: JSONValue? = nil) -> HTTPServer.Response {
        var body: [JSONValue.Member] = [.init("kind", .string("Status")), .init("apiVersion", .string("v1")), .init("metadata", .object([])),
                                        .init("status", .string("Failure")), .init("message", .string(message)),
                                        .init("reason", .string(reason)), .init("code", .int(code))]
        if let details { body.insert(.init("details", details), at: 6) }
        return json(code, .object(body))
    }

    func json(_ code: Int, _ value: JSONValue) -> HTTPServer.Response {
        .full(status: code, headers: [("Content-Type", "application/json")], body: Array(value.jsonText.utf8))
    }
}

extension KubeTestServer {
    /// An apply as another client would send it (another field manager, no force), over TLS.
    public func rawApply(_ object: JSONValue, path: String) async throws -> (status: Int, body: [UInt8]) {
        let r = try await SystemCommandRunner().run(Command("curl", [
            "-s", "-o", "/dev/stdout", "-w", "\n%{http_code}", "--cacert", tls.directory + "/ca.pem",
            "--cert", tls.directory + "/client.pem", "--key", tls.directory + "/client.key",
            "-X", "PATCH", "-H", "Content-Type: application/apply-patch+yaml", "--data-binary", "@-", url + path,
        ], input: Array(object.jsonText.utf8)))
        let lines = r.stdout.split(separator: "\n", omittingEmptySubsequences: false)
        return (Int(lines.last ?? "") ?? 0, Array(lines.dropLast().joined(separator: "\n").utf8))
    }
}

extension KubeTestServer {
    /// A kubeconfig file for this server with the test client certificate, for kubectl.
    public func writeKubeconfig(to path: String) throws {
        func b64(_ name: String) -> String { Data(tls.pem(name)).base64EncodedString() }
        let text = """
            apiVersion: v1
            kind: Config
            clusters:
            - name: test
              cluster: {server: "\(url)", certificate-authority-data: \(b64("ca.pem"))}
            users:
            - name: admin
              user: {client-certificate-data: \(b64("client.pem")), client-key-data: \(b64("client.key"))}
            contexts:
            - name: test
              context: {cluster: test, user: admin}
            current-context: test

            """
        try text.write(toFile: path, atomically: true, encoding: .utf8)
    }
}
