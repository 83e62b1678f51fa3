#if canImport(Glibc)
internal import Glibc
#endif
internal import CLibpq

/// Where a PostgreSQL server is and how to log in to it.
public struct PostgresTarget: Sendable, Equatable {
    public var host: String
    public var port: Int
    public var user: String
    /// Never printed, never on a command line: libpq gets it as a parameter, the client tools
    /// through a 0600 passfile.
    public var password: String?
    public var sslmode: String
    /// How it was found, for messages: `connection 10.0.0.5:5432`, `release postgresql (Service db/postgresql)`.
    public var origin: String

    public init(host: String, port: Int, user: String, password: String?, sslmode: String, origin: String) {
        (self.host, self.port, self.user, self.password, self.sslmode, self.origin) = (host, port, user, password, sslmode, origin)
    }
}

/// A failure talking to PostgreSQL, with a reason a metric can carry.
public struct PostgresError: Error, Sendable, CustomStringConvertible {
    public var reason: String
    public var message: String
    public var description: String { message }
}

/// One libpq connection, used from one thread at a time (calls block: run them through
/// `Offload`). The backups hold a repeatable-read transaction open on it while `pg_dump`
/// reads the same snapshot.
final class PostgresSession: @unchecked Sendable {
    private var connection: OpaquePointer?

    init(_ target: PostgresTarget, database: String) throws(PostgresError) {
        var parameters: [(String, String)] = [
            ("host", target.host), ("port", String(target.port)), ("user", target.user), ("dbname", database),
            ("sslmode", target.sslmode), ("connect_timeout", "10"), ("application_name", "nodeagent"),
            // A connection that silently dies must not block a job (and shutdown) forever.
            ("keepalives", "1"), ("keepalives_idle", "30"), ("keepalives_interval", "10"), ("keepalives_count", "3"),
            ("tcp_user_timeout", "60000"),
        ]
        if let password = target.password { parameters.append(("password", password)) }
        let keys = parameters.map { strdup($0.0) }, values = parameters.map { strdup($0.1) }
        defer {
            keys.forEach { free($0) }
            values.forEach { free($0) }
        }
        var keyArray: [UnsafePointer<CChar>?] = keys.map { UnsafePointer($0) } + [nil]
        var valueArray: [UnsafePointer<CChar>?] = values.map { UnsafePointer($0) } + [nil]
        connection = PQconnectdbParams(&keyArray, &valueArray, 0)
        guard let connection, PQstatus(connection) == CONNECTION_OK else {
            let message = connection.map { String(cString: PQerrorMessage($0)) } ?? "out of memory"
            if let connection { PQfinish(connection) }
            self.connection = nil
            throw PostgresError(reason: "ConnectionFailed",
                                message: "cannot connect to PostgreSQL at \(target.origin) (database \(database)): \(message.trimmingNewlines)")
        }
    }

    deinit {
        if let connection { PQfinish(connection) }
    }

    /// Runs one statement. - Returns: the rows, each value as text (nil for NULL).
    @discardableResult
    func query(_ sql: String) throws(PostgresError) -> [[String?]] {
        guard let connection else { throw PostgresError(reason: "ConnectionFailed", message: "not connected") }
        guard let result = PQexec(connection, sql) else {
            throw PostgresError(reason: "QueryFailed", message: String(cString: PQerrorMessage(connection)).trimmingNewlines)
        }
        defer { PQclear(result) }
        let status = PQresultStatus(result)
        guard status == PGRES_TUPLES_OK || status == PGRES_COMMAND_OK else {
            throw PostgresError(reason: "QueryFailed", message: String(cString: PQresultErrorMessage(result)).trimmingNewlines)
        }
        var rows: [[String?]] = []
        for r in 0..<PQntuples(result) {
            var row: [String?] = []
            for c in 0..<PQnfields(result) {
                row.append(PQgetisnull(result, r, c) == 1 ? nil : String(cString: PQgetvalue(result, r, c)))
            }
            rows.append(row)
        }
        return rows
    }

    /// `"name"`, doubled quotes inside: an identifier SQL cannot misread.
    static func identifier(_ name: String) -> String {
        "\"" + name.split(separator: "\"", omittingEmptySubsequences: false).joined(separator: "\"\"") + "\""
    }

    /// `'text'`, doubled quotes inside.
    static func literal(_ text: String) -> String {
        "'" + text.split(separator: "'", omittingEmptySubsequences: false).joined(separator: "''") + "'"
    }
}

/// Runs blocking work (libpq calls, long file hashing) on a thread of its own, so it never
/// holds one of Swift's few cooperative threads.
enum Offload {
    static func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        let result: Result<T, any Error> = await withCheckedContinuation { continuation in
            let box = Unmanaged.passRetained(OffloadJob {
                continuation.resume(returning: Result { try body() })
            })
            var thread = pthread_t()
            let rc = pthread_create(&thread, nil, { raw in
                let box = Unmanaged<OffloadJob>.fromOpaque(raw!).takeRetainedValue()
                box.run()
                return nil
            }, box.toOpaque())
            if rc == 0 {
                pthread_detach(thread)
            } else {
                box.release()
                continuation.resume(returning: .failure(PostgresError(reason: "ThreadFailed", message: "pthread_create failed: \(rc)")))
            }
        }
        return try result.get()
    }
}

/// The work handed to a thread by `Offload`.
final class OffloadJob: @unchecked Sendable {
    let run: () -> Void
    init(_ run: @escaping () -> Void) { self.run = run }
}
