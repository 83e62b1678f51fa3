internal import Crypto
import YAML

/// A snapshot of the whole machine, as its provider keeps it.
public struct ProviderSnapshot: Sendable, Equatable {
    public var id: String
    public var description: String
    public var createdAt: Timestamp?
}

/// A provider's refusal or failure, with its own words.
public struct ProviderError: Error, Sendable, CustomStringConvertible {
    public var reason: String
    public var message: String
    public var description: String { "\(reason): \(message)" }
}

/// The seam another provider would implement: a VPS keeps one snapshot, which `replace`
/// swaps for a fresh one.
public protocol SnapshotProvider: Sendable {
    func current() async throws -> ProviderSnapshot?
    func replace(description: String, progress: @Sendable (String) -> Void) async throws -> ProviderSnapshot
}

/// python-ovh's `ovh.conf`: `[default] endpoint=ovh-eu`, then `[ovh-eu]` with
/// `application_key`, `application_secret`, `consumer_key` (ovh/python-ovh, ovh/config.py).
public struct OVHCredentials: Sendable {
    let applicationKey: String
    let applicationSecret: String
    let consumerKey: String
    /// The section the keys came from (`ovh-eu`, `ovh-ca`, `ovh-us`…).
    let endpointName: String

    /// python-ovh's endpoint names (ovh/client.py, ENDPOINTS).
    static let endpoints = ["ovh-eu": "https://eu.api.ovh.com/1.0", "ovh-ca": "https://ca.api.ovh.com/1.0",
                            "ovh-us": "https://api.us.ovhcloud.com/1.0"]

    /// The API the keys belong to, when the file names one python-ovh knows.
    public var endpoint: String? { Self.endpoints[endpointName] }

    /// The key values, to keep out of any message.
    var values: [String] { [applicationKey, applicationSecret, consumerKey] }

    /// - Throws: `ProviderError` naming the file and the key that is missing, never a value.
    public init(conf text: String, file: String) throws {
        var sections: [String: [String: String]] = [:]
        var section = ""
        for raw in text.split(whereSeparator: \.isNewline) {
            let line = raw.drop { $0 == " " || $0 == "\t" }
            if line.isEmpty || line.hasPrefix("#") || line.hasPrefix(";") { continue }
            if line.hasPrefix("["), let end = line.firstIndex(of: "]") {
                section = String(line[line.index(after: line.startIndex)..<end])
                continue
            }
            guard let eq = line.firstIndex(where: { $0 == "=" || $0 == ":" }) else { continue }
            let key = String(line[..<eq]).filter { !$0.isWhitespace }.lowercased()
            let value = String(line[line.index(after: eq)...]).drop { $0 == " " || $0 == "\t" }
            sections[section, default: [:]][key] = String(value.reversed().drop { $0 == " " || $0 == "\t" || $0 == "\r" }.reversed())
        }
        let chosen = sections["default"]?["endpoint"] ?? sections.keys.sorted().first { sections[$0]?["application_key"] != nil } ?? ""
        let s = sections[chosen] ?? [:]
        func need(_ key: String) throws -> String {
            guard let v = s[key], !v.isEmpty else {
                throw ProviderError(reason: "CredentialsInvalid", message: "\(file): no \(key) in section [\(chosen)] (python-ovh's ovh.conf format)")
            }
            return v
        }
        endpointName = chosen
        applicationKey = try need("application_key")
        applicationSecret = try need("application_secret")
        consumerKey = try need("consumer_key")
    }
}

/// The OVHcloud API v1, signed as OVHcloud documents it (ovh/python-ovh, ovh/client.py
/// `raw_call`): `X-Ovh-Application`, `X-Ovh-Consumer`, `X-Ovh-Timestamp` (the server's time,
/// from `GET /auth/time`, plus the time since) and `X-Ovh-Signature: "$1$" + SHA1_hex(AS + "+" +
/// CK + "+" + METHOD + "+" + FULL_URL + "+" + BODY + "+" + TIMESTAMP)`. Requests go through `curl
/// -K -`: the keys and the signature are in its config on stdin, never on a command line.
public struct OVHClient: Sendable {
    let endpoint: String
    let credentials: OVHCredentials
    let commands: any CommandRunner
    let clock: any WallClock

    public init(endpoint: String, credentials: OVHCredentials, commands: any CommandRunner, clock: any WallClock) {
        self.endpoint = endpoint.hasSuffix("/") ? String(endpoint.dropLast()) : endpoint
        self.credentials = credentials
        self.commands = commands
        self.clock = clock
    }

    /// "$1$" + SHA1_hex(AS+CK+METHOD+URL+BODY+TS, joined by "+").
    public static func signature(secret: String, consumer: String, method: String, url: String, body: String, timestamp: Int64) -> String {
        let text = [secret, consumer, method, url, body, String(timestamp)].joined(separator: "+")
        return "$1$" + Insecure.SHA1.hash(data: Array(text.utf8)).map { String($0, radix: 16).count == 1 ? "0" + String($0, radix: 16) : String($0, radix: 16) }.joined()
    }

    /// The server's clock minus ours, in seconds.
    func timeDelta() async throws -> Int64 {
        let (status, body) = try await send(method: "GET", path: "/auth/time", body: nil, signed: nil)
        guard status == 200, let server = Int64(String(decoding: body, as: UTF8.self).filter(\.isNumber)) else {
            throw ProviderError(reason: "Unreachable", message: "GET /auth/time answered \(status)")
        }
        return server - clock.now().millisecondsSinceEpoch / 1000
    }

    /// One signed call. - Returns: the status and the JSON body.
    func call(_ method: String, _ path: String, body: JSONValue? = nil, delta: Int64) async throws -> (Int, JSONValue?) {
        let text = body?.jsonText ?? ""
        let timestamp = clock.now().millisecondsSinceEpoch / 1000 + delta
        let signature = Self.signature(secret: credentials.applicationSecret, consumer: credentials.consumerKey, method: method,
                                       url: endpoint + path, body: text, timestamp: timestamp)
        let (status, bytes) = try await send(method: method, path: path, body: body == nil ? nil : text,
                                             signed: [("X-Ovh-Consumer", credentials.consumerKey), ("X-Ovh-Timestamp", String(timestamp)),
                                                      ("X-Ovh-Signature", signature)])
        return (status, JSONValue.parse(bytes))
    }

    func send(method: String, path: String, body: String?, signed: [(String, String)]?) async throws -> (Int, [UInt8]) {
        var config = CurlConfig(url: endpoint + path)
        config.set("request", method)
        config.set("header", "X-Ovh-Application: \(credentials.applicationKey)")
        for (name, value) in signed ?? [] { config.set("header", "\(name): \(value)") }
        if let body {
            config.set("header", "Content-Type: application/json")
            config.set("data-raw", body)
        }
        let result = try await commands.run(config.command(["--max-time", "30", "--write-out", "\n%{http_code}"], timeout: .seconds(45)))
        guard result.exitCode == 0 else {
            var why = result.stderr
            for value in credentials.values where value.count >= 4 { why = why.replacingAll(value, with: "[redacted]") }
            throw ProviderError(reason: "Unreachable", message: "\(method) \(path): curl exit \(result.exitCode.map(String.init) ?? "?"): \(why)")
        }
        let out = Array(result.stdout.utf8)
        guard let newline = out.lastIndex(of: UInt8(ascii: "\n")), let status = Int(String(decoding: out[(newline + 1)...], as: UTF8.self)) else {
            throw ProviderError(reason: "BadAnswer", message: "\(method) \(path): no status")
        }
        return (status, Array(out[..<newline]))
    }
}

/// OVHcloud VPS snapshots: `GET/DELETE /vps/{serviceName}/snapshot`,
/// `POST /vps/{serviceName}/createSnapshot {description}`, `GET /vps/{serviceName}/tasks/{id}`
/// (the OVHcloud API schema, vps.json: vps.Snapshot, vps.Task with state todo, doing, done,
/// error, cancelled…). A VPS keeps one snapshot: a new one replaces it (delete, wait for the
/// task, create, wait for the task).
public struct OVHSnapshots: SnapshotProvider {
    let client: OVHClient
    let serviceName: String
    let clock: any WallClock
    /// How often a task is polled, and for how long.
    var pollEvery = TimeSpan(milliseconds: 5_000)
    /// Well under the heartbeat's 30 minutes for a hung pass: a K3s upgrade waits on this.
    var giveUpAfter = TimeSpan(milliseconds: 20 * 60_000)

    public init(client: OVHClient, serviceName: String, clock: any WallClock) {
        (self.client, self.serviceName, self.clock) = (client, serviceName, clock)
    }

    var base: String { "/vps/\(serviceName)" }

    public func current() async throws -> ProviderSnapshot? {
        try await current(delta: try await client.timeDelta())
    }

    func current(delta: Int64) async throws -> ProviderSnapshot? {
        let (status, body) = try await client.call("GET", base + "/snapshot", delta: delta)
        if status == 404 { return nil }
        try Self.check(status, body, doing: "GET \(base)/snapshot")
        return ProviderSnapshot(id: body?["id"]?.string ?? "?", description: body?["description"]?.string ?? "",
                                createdAt: body?["creationDate"]?.string.flatMap(Timestamp.init(rfc3339:)))
    }

    public func replace(description: String, progress: @Sendable (String) -> Void) async throws -> ProviderSnapshot {
        let delta = try await client.timeDelta()
        if let old = try await current(delta: delta) {
            progress("deleting the previous snapshot \(old.id)")
            let (status, task) = try await client.call("DELETE", base + "/snapshot", delta: delta)
            try Self.check(status, task, doing: "DELETE \(base)/snapshot")
            try await wait(task, delta: delta, progress: progress)
        }
        progress("creating a snapshot of \(serviceName)")
        let (status, task) = try await client.call("POST", base + "/createSnapshot", body: .object(["description": .string(description)]), delta: delta)
        try Self.check(status, task, doing: "POST \(base)/createSnapshot")
        try await wait(task, delta: delta, progress: progress)
        guard let made = try await current(delta: delta) else {
            throw ProviderError(reason: "SnapshotMissing", message: "the createSnapshot task finished but \(serviceName) has no snapshot")
        }
        return made
    }

    func wait(_ task: JSONValue?, delta: Int64, progress: @Sendable (String) -> Void) async throws {
        guard let id = task?["id"].flatMap({ $0.int.map(String.init) ?? $0.string }) else {
            throw ProviderError(reason: "BadAnswer", message: "no task id in \(task?.jsonText ?? "nothing")")
        }
        let deadline = clock.monotonicNow().adding(giveUpAfter)
        var pollFailures = 0
        while clock.monotonicNow() < deadline {
            let status: Int, body: JSONValue?
            do {
                (status, body) = try await client.call("GET", base + "/tasks/\(id)", delta: delta)
                try Self.check(status, body, doing: "GET \(base)/tasks/\(id)")
                pollFailures = 0
            } catch let error as ProviderError where error.reason == "Unreachable" || error.message.contains("answered 5") {
                // The task goes on at OVHcloud: a poll that failed is tried again, three times.
                pollFailures += 1
                guard pollFailures < 3 else { throw error }
                try await clock.sleep(for: pollEvery)
                continue
            }
            let state = body?["state"]?.string ?? "?"
            switch state {
            case "done": return
            case "todo", "doing":
                progress("task \(id) (\(body?["type"]?.string ?? "?")): \(state)")
                try await clock.sleep(for: pollEvery)
            default:
                // error, cancelled, blocked, paused, waitingAck: none of these finishes by itself.
                throw ProviderError(reason: "TaskFailed", message: "task \(id) (\(body?["type"]?.string ?? "?")) is \(state): see the VPS's tasks in the OVHcloud Control Panel")
            }
        }
        throw ProviderError(reason: "TaskTimeout", message: "task \(id) not done after \(giveUpAfter)")
    }

    /// OVHcloud's refusal, with its message (`{"message": …, "errorCode"?: …}`).
    static func check(_ status: Int, _ body: JSONValue?, doing what: String) throws {
        guard !(200..<300).contains(status) else { return }
        let message = body?["message"]?.string ?? "HTTP \(status)"
        let reason: String
        switch status {
        case 401: reason = "CredentialsRefused"
        case 403 where body?["errorCode"]?.string?.contains("CREDENTIAL") == true || body?["errorCode"]?.string == "INVALID_KEY":
            reason = "CredentialsRefused"
        case 400 where body?["errorCode"]?.string == "INVALID_SIGNATURE": reason = "CredentialsRefused"
        case 403: reason = "Forbidden"
        case 409: reason = "TaskRunning"
        case 404: reason = "NotFound"
        default: reason = "Refused"
        }
        throw ProviderError(reason: reason, message: "\(what): OVHcloud answered \(status): \(message)")
    }
}

extension ProviderSnapshotSpec {
    /// The provider for this spec, its credentials read from their file.
    public func provider(files: any FileSystem, commands: any CommandRunner, clock: any WallClock) throws -> any SnapshotProvider {
        guard let text = try SecretSource.files(files).read(credentialsFile, for: "backups.providerSnapshot.credentialsFile") else {
            throw ProviderError(reason: "CredentialsMissing", message: "\(credentialsFile) does not exist")
        }
        let credentials = try OVHCredentials(conf: text, file: credentialsFile.value)
        // The endpoint the desired state names, else the one the credentials file names.
        let api = endpoint ?? credentials.endpoint ?? Self.defaultEndpoint
        return OVHSnapshots(client: OVHClient(endpoint: api, credentials: credentials, commands: commands, clock: clock),
                            serviceName: serviceName, clock: clock)
    }
}
