#if canImport(FoundationEssentials)
internal import FoundationEssentials
#else
internal import Foundation
#endif
public import YAML

/// A `metav1.Status` failure from the API server: code, reason, message.
public struct KubeStatusError: Error, Sendable, Equatable, CustomStringConvertible {
    public var code: Int
    /// `NotFound`, `AlreadyExists`, `Conflict`, `Invalid`, `Forbidden`, `TooManyRequests`…
    public var reason: String
    public var message: String

    public var isNotFound: Bool { code == 404 }
    public var isConflict: Bool { code == 409 }
    public var description: String { "\(code) \(reason): \(message)" }

    init(_ response: HTTPResponse) {
        self.init(status: response.status, body: response.body)
    }

    /// From a failed response: its `metav1.Status` body, or the HTTP status and the body's start.
    package init(status: Int, body bytes: [UInt8]) {
        let body = JSONValue.parse(bytes)
        code = body?["code"]?.int ?? status
        reason = body?["reason"]?.string ?? "HTTP\(status)"
        message = body?["message"]?.string ?? String(decoding: bytes.prefix(300), as: UTF8.self)
    }
}

/// One change seen by a watch.
public enum WatchEvent: Sendable, Equatable {
    case added(JSONValue)
    case modified(JSONValue)
    case deleted(JSONValue)
    /// The server vouches that everything up to this version has been sent.
    case bookmark(resourceVersion: String)
    /// The whole collection as it is now: at the start, and after a 410 Gone.
    case relisted([JSONValue])
}

/// One line of a watch stream (`{"type": …, "object": …}`), decoded.
package enum WatchLine: Sendable, Equatable {
    case event(WatchEvent, resourceVersion: String?)
    /// `ERROR` with code 410: the version is too old, relist.
    case gone
    case failed(KubeStatusError)
    /// Not JSON, no type or object, or a type this client does not know.
    case ignored

    package init(_ line: [UInt8]) {
        guard let event = JSONValue.parse(line), let type = event["type"]?.string, let object = event["object"] else {
            self = .ignored
            return
        }
        if type == "ERROR" {
            if object["code"]?.int == 410 {
                self = .gone
            } else {
                self = .failed(KubeStatusError(code: object["code"]?.int ?? 500, reason: object["reason"]?.string ?? "Error",
                                               message: object["message"]?.string ?? ""))
            }
            return
        }
        let version = object["metadata"]?["resourceVersion"]?.string
        switch type {
        case "ADDED": self = .event(.added(object), resourceVersion: version)
        case "MODIFIED": self = .event(.modified(object), resourceVersion: version)
        case "DELETED": self = .event(.deleted(object), resourceVersion: version)
        case "BOOKMARK": self = .event(.bookmark(resourceVersion: version ?? ""), resourceVersion: version)
        default: self = .ignored
        }
    }
}

extension WatchEvent {
    /// A bookmark carries the stream's latest version (a bookmark object without one keeps it).
    func withBookmark(_ version: String) -> WatchEvent {
        if case .bookmark = self { return .bookmark(resourceVersion: version) }
        return self
    }
}

/// How failed requests are retried: connection failures, 429 and 5xx, with capped exponential
/// backoff, honouring `Retry-After`.
public struct RetryPolicy: Sendable {
    public var attempts: Int
    public var initialDelay: Duration
    public var maxDelay: Duration

    public init(attempts: Int = 5, initialDelay: Duration = .milliseconds(200), maxDelay: Duration = .seconds(5)) {
        self.attempts = attempts
        self.initialDelay = initialDelay
        self.maxDelay = maxDelay
    }
}

/// Which objects a call is about: a resource of a group version, optionally in a namespace,
/// optionally one name.
public struct ResourceRef: Sendable, Hashable {
    public var group: String
    public var version: String
    public var plural: String
    public var namespace: String?
    public var name: String?

    public init(group: String = "", version: String = "v1", plural: String, namespace: String? = nil, name: String? = nil) {
        (self.group, self.version, self.plural, self.namespace, self.name) = (group, version, plural, namespace, name)
    }

    var path: String {
        var p = group.isEmpty ? "/api/\(version)" : "/apis/\(group)/\(version)"
        if let namespace { p += "/namespaces/\(namespace)" }
        p += "/\(plural)"
        if let name { p += "/\(name)" }
        return p
    }
}

/// The Kubernetes API: get, list, server-side apply, delete and discovery, over `CurlTransport`.
/// Objects are untyped JSON; nothing here knows about reconcilers.
public final class KubeAPI: Sendable {
    public static let fieldManager = KubeClientIdentity.fieldManager
    let transport: CurlTransport
    let retry: RetryPolicy
    /// How long one request may take, connection included (watches excepted).
    let timeout: Duration
    /// Sees the text of every `Warning` header the server sends (a deprecated API, a field it
    /// dropped): nothing the server says is swallowed.
    let warnings: @Sendable (String) -> Void

    public init(config: Kubeconfig, retry: RetryPolicy = RetryPolicy(), timeout: Duration = .seconds(30),
                warnings: @escaping @Sendable (String) -> Void = { _ in }) {
        transport = CurlTransport(config: config)
        self.retry = retry
        self.timeout = timeout
        self.warnings = warnings
    }

    /// kube-apiserver's refusal of a server-side apply whose patch has a field the schema
    /// does not declare: HTTP 500 with `failed to create typed patch object (…): .spec.x: field
    /// not declared in schema` (structuredmerge.go; kubernetes/kubernetes#122480, #139253).
    static func isSchemaRefusal(_ response: HTTPResponse) -> Bool {
        response.status == 500 && String(decoding: response.body, as: UTF8.self).contains("field not declared in schema")
    }

    /// The texts of a `Warning` header (RFC 7234: `299 - "text"`), one per warning.
    static func warningTexts(_ header: String) -> [String] {
        header.split(separator: "\n").map { line in
            let text = line.drop { $0 != "\"" }
            guard text.count >= 2, text.hasSuffix("\"") else { return String(line) }
            return String(text.dropFirst().dropLast()).replacing("\\\"", with: "\"")
        }
    }

    /// `GET /version`'s `gitVersion`, such as `v1.31.4+k3s1`.
    public func serverVersion() async throws -> String {
        let v = try await json("GET", "/version")
        return v["gitVersion"]?.string ?? "unknown"
    }

    public func get(_ ref: ResourceRef) async throws -> JSONValue {
        try await json("GET", ref.path)
    }

    /// The object, or nil when it does not exist.
    public func getIfPresent(_ ref: ResourceRef) async throws -> JSONValue? {
        do {
            return try await get(ref)
        } catch let error as KubeStatusError where error.isNotFound {
            return nil
        }
    }

    /// The last lines a pod's (first) container wrote, as `kubectl logs --tail` shows them.
    /// - Parameter previous: the run before the container's last restart (`kubectl logs -p`).
    public func log(namespace: String, pod: String, tailLines: Int = 20, previous: Bool = false) async throws -> String {
        let path = ResourceRef(plural: "pods", namespace: namespace, name: pod).path + "/log?tailLines=\(tailLines)" + (previous ? "&previous=true" : "")
        let response = try await send(HTTPRequest("GET", path, headers: [("Accept", "text/plain")], timeout: timeout))
        guard (200..<300).contains(response.status) else { throw KubeStatusError(response) }
        return String(decoding: response.body, as: UTF8.self)
    }

    /// Whether `GET /readyz` answers 200 `ok`: the API server is up and its checks pass.
    /// One try, no retries: the caller polls.
    public func isReady() async -> Bool {
        guard let response = try? await transport.send(HTTPRequest("GET", "/readyz", timeout: min(timeout, .seconds(5)))) else { return false }
        return response.status == 200
    }

    /// Every matching object, following `continue` tokens page by page.
    public func list(_ ref: ResourceRef, labelSelector: String? = nil, pageSize: Int = 500) async throws -> [JSONValue] {
        try await listWithVersion(ref, labelSelector: labelSelector, pageSize: pageSize).items
    }

    /// The objects and the collection's resourceVersion, from which a watch can continue.
    public func listWithVersion(_ ref: ResourceRef, labelSelector: String? = nil, pageSize: Int = 500) async throws
        -> (items: [JSONValue], resourceVersion: String) {
        var items: [JSONValue] = []
        var token: String?
        var version = ""
        repeat {
            var query = ["limit=\(pageSize)"]
            if let labelSelector { query.append("labelSelector=\(Self.escape(labelSelector))") }
            if let token { query.append("continue=\(Self.escape(token))") }
            let page = try await json("GET", ref.path + "?" + query.joined(separator: "&"))
            items += page["items"]?.array ?? []
            if version.isEmpty { version = page["metadata"]?["resourceVersion"]?.string ?? "" }
            token = page["metadata"]?["continue"]?.string
        } while token?.isEmpty == false
        return (items, version)
    }

    /// Watches a collection: first the current objects (`.relisted`), then every change, for as
    /// long as the caller iterates. A dropped connection is resumed from the last
    /// resourceVersion seen (bookmarks included); a `410 Gone` (the server forgot that far
    /// back) is answered with a fresh list, delivered as `.relisted` again.
    public func watch(_ ref: ResourceRef, labelSelector: String? = nil) -> AsyncThrowingStream<WatchEvent, any Error> {
        AsyncThrowingStream { continuation in
            let task = Task {
                do {
                    try await self.runWatch(ref, labelSelector: labelSelector) { continuation.yield($0) }
                    continuation.finish()
                } catch {
                    continuation.finish(throwing: error)
                }
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }

    private func runWatch(_ ref: ResourceRef, labelSelector: String?, _ emit: @Sendable (WatchEvent) -> Void) async throws {
        var version: String?
        var failures = 0
        while !Task.isCancelled {
            if version == nil {
                let (items, listed) = try await listWithVersion(ref, labelSelector: labelSelector)
                emit(.relisted(items))
                version = listed
            }
            var query = "watch=1&allowWatchBookmarks=true&resourceVersion=\(version ?? "")"
            if let labelSelector { query += "&labelSelector=\(Self.escape(labelSelector))" }
            var buffer: [UInt8] = []
            do {
                lines: for try await chunk in transport.stream(HTTPRequest("GET", ref.path + "?" + query, timeout: .seconds(3600))) {
                    buffer += chunk
                    while let newline = buffer.firstIndex(of: 10) {
                        let line = Array(buffer[..<newline])
                        buffer.removeFirst(newline + 1)
                        switch WatchLine(line) {
                        case .ignored: continue
                        case .gone: version = nil; break lines
                        case .failed(let error): throw error
                        case .event(let event, let resourceVersion):
                            if let resourceVersion { version = resourceVersion }
                            emit(event.withBookmark(version ?? ""))
                            failures = 0
                        }
                    }
                }
            } catch let error as StreamStatusError where error.response.status == 410 {
                version = nil
            } catch let error as StreamStatusError where error.response.status == 429 || error.response.status >= 500 {
                // Throttled or unavailable: like a dropped connection, retried with backoff.
                failures += 1
                if failures >= retry.attempts { throw KubeStatusError(error.response) }
            } catch is CancellationError {
                return
            } catch let error as TransportError {
                if Task.isCancelled { return }
                failures += 1
                if failures >= retry.attempts { throw error }
            }
            // The server ended the watch (a timeout, a restart, a dropped connection): go on from
            // the last version seen, after a short pause that grows while failures repeat.
            try await Task.sleep(for: min(retry.initialDelay * (1 << min(failures, 5)), retry.maxDelay))
        }
    }

    /// Server-side apply (`PATCH`, `application/apply-patch+yaml`, `fieldManager=nodeagent`,
    /// `force=true`, `fieldValidation=Strict`); with `dryRun`, the server computes the result
    /// without storing it. A field the server's schema does not declare fails the request
    /// (kube-apiserver refuses it in an apply whatever `fieldValidation` says, as HTTP 500;
    /// Strict makes the same true of any other write), so nothing nodeagent sends is ever lost
    /// silently.
    /// - Returns: the object as the server has (or would have) it.
    public func apply(_ object: JSONValue, to ref: ResourceRef, force: Bool = true, dryRun: Bool = false) async throws -> JSONValue {
        var query = "fieldManager=\(Self.fieldManager)&force=\(force)&fieldValidation=Strict"
        if dryRun { query += "&dryRun=All" }
        return try await json("PATCH", ref.path + "?" + query, body: Array(object.jsonText.utf8),
                              contentType: "application/apply-patch+yaml")
    }

    /// Deletes one object; a missing one is not an error.
    /// - Returns: whether it existed.
    @discardableResult
    public func delete(_ ref: ResourceRef, propagationPolicy: String = "Background") async throws -> Bool {
        do {
            _ = try await json("DELETE", ref.path + "?propagationPolicy=\(propagationPolicy)")
            return true
        } catch let error as KubeStatusError where error.isNotFound {
            return false
        }
    }

    /// Whether the API server serves a group version (`helm.cattle.io/v1`) with a resource.
    public func serves(group: String, version: String, plural: String) async throws -> Bool {
        do {
            let list = try await json("GET", group.isEmpty ? "/api/\(version)" : "/apis/\(group)/\(version)")
            return list["resources"]?.array?.contains { $0["name"]?.string == plural } ?? false
        } catch let error as KubeStatusError where error.isNotFound {
            return false
        }
    }

    /// Finds the resource a user names: plural, singular or kind, any case, optionally with
    /// its group (`helmcharts.helm.cattle.io`), through discovery.
    /// - Returns: the resource (without namespace or name) and whether it is namespaced.
    public func resolve(_ name: String) async throws -> (ref: ResourceRef, namespaced: Bool)? {
        let wanted = name.lowercased()
        var groupVersions = ["v1"]
        let groups = try await json("GET", "/apis")
        for g in groups["groups"]?.array ?? [] {
            if let gv = g["preferredVersion"]?["groupVersion"]?.string { groupVersions.append(gv) }
        }
        for gv in groupVersions {
            let parts = gv.split(separator: "/").map(String.init)
            let (group, version) = parts.count == 2 ? (parts[0], parts[1]) : ("", parts[0])
            let list = try await json("GET", group.isEmpty ? "/api/\(version)" : "/apis/\(group)/\(version)")
            for r in list["resources"]?.array ?? [] {
                guard let plural = r["name"]?.string, !plural.contains("/") else { continue }
                let names = [plural, r["singularName"]?.string ?? "", r["kind"]?.string?.lowercased() ?? ""]
                    .flatMap { [$0, group.isEmpty ? $0 : "\($0).\(group)"] }
                if names.contains(wanted) {
                    return (ResourceRef(group: group, version: version, plural: plural), r["namespaced"] == .bool(true))
                }
            }
        }
        return nil
    }

    // MARK: -

    func json(_ method: String, _ path: String, body: [UInt8]? = nil, contentType: String? = nil) async throws -> JSONValue {
        var headers: [(name: String, value: String)] = [("Accept", "application/json")]
        if let contentType { headers.append(("Content-Type", contentType)) }
        let response = try await send(HTTPRequest(method, path, headers: headers, body: body, timeout: timeout))
        if let header = response.headers["warning"] {
            for text in Self.warningTexts(header) { warnings("API server warning for \(method) \(path.split(separator: "?").first ?? ""): \(text)") }
        }
        guard (200..<300).contains(response.status) else { throw KubeStatusError(response) }
        guard let value = JSONValue.parse(response.body) else {
            throw KubeStatusError(code: response.status, reason: "BadResponse", message: "the response is not JSON")
        }
        return value
    }

    /// Sends with retries: transport failures, 429 and 5xx are tried again up to the policy's
    /// cap, waiting `Retry-After` when the server gives one, else a doubling delay.
    func send(_ request: HTTPRequest) async throws -> HTTPResponse {
        var delay = retry.initialDelay
        var attempt = 1
        while true {
            var wait = delay
            do {
                let response = try await transport.send(request)
                // A server-side apply of a field the schema lacks comes back as a 500 that no
                // retry can fix (kubernetes/kubernetes#122480): not retried.
                let retryable = response.status == 429 || ((500...599).contains(response.status) && !Self.isSchemaRefusal(response))
                if !retryable || attempt >= retry.attempts { return response }
                if let after = response.headers["retry-after"].flatMap(Int.init) { wait = .seconds(min(after, 30)) }
            } catch {
                if attempt >= retry.attempts { throw error }
            }
            try await Task.sleep(for: wait)
            delay = min(delay * 2, retry.maxDelay)
            attempt += 1
        }
    }

    static func escape(_ s: String) -> String {
        var out = ""
        for b in s.utf8 {
            let c = Character(UnicodeScalar(b))
            if c.isASCII && (c.isLetter || c.isNumber || "-_.~".contains(c)) {
                out.append(c)
            } else {
                let hex = String(b, radix: 16, uppercase: true)
                out += "%" + (hex.count == 1 ? "0" : "") + hex
            }
        }
        return out
    }
}

extension KubeStatusError {
    init(code: Int, reason: String, message: String) {
        self.code = code
        self.reason = reason
        self.message = message
    }
}
