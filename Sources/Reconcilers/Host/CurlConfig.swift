/// A request for `curl` whose URL, headers and body travel in a config on its stdin
/// (`curl -q -K -`), never on its command line, which any user can read from /proc. `-q` comes
/// first: no ~/.curlrc, whose `--trace` or `--proxy` could expose what the config holds.
public struct CurlConfig: Sendable {
    private var text = ""

    public init(url: String) { set("url", url) }

    /// One `option = "value"` line, quoted as curl's config unquotes it (`\\`, `\"`, `\n`, `\r`,
    /// `\t`): a newline or quote in the value cannot start another option.
    public mutating func set(_ option: String, _ value: String) {
        var quoted = "\""
        for c in value {
            switch c {
            case "\\": quoted += "\\\\"
            case "\"": quoted += "\\\""
            case "\n": quoted += "\\n"
            case "\r": quoted += "\\r"
            case "\t": quoted += "\\t"
            default: quoted.append(c)
            }
        }
        text += "\(option) = \(quoted)\"\n"
    }

    /// `curl -q --silent --show-error --proto =https,http OPTIONS -K -`, the config on stdin,
    /// which holds secrets: its output never goes into an error.
    public func command(_ options: [String], timeout: Duration) -> Command {
        Command("curl", ["-q", "--silent", "--show-error", "--proto", "=https,http"] + options + ["-K", "-"],
                input: Array(text.utf8), timeout: timeout, holdsSecrets: true)
    }
}
