public import YAML

/// The monitoring configuration nodeagent generates for a single K3s node: Alertmanager's
/// email routing, the kube-prometheus-stack values that keep it quiet on K3s, and nodeagent's
/// own alerting rules.
public enum AlertingConfig {
    /// The Secret holding the SMTP password, mounted into Alertmanager by the chart
    /// (`alertmanagerSpec.secrets`) at `/etc/alertmanager/secrets/NAME/KEY`.
    public static let secretName = "nodeagent-alertmanager-smtp"
    public static let mountedPasswordPath = "/etc/alertmanager/secrets/\(secretName)/password"
    /// The Secret holding the Watchdog's webhook URL (`spec.heartbeat.watchdogUrlFile`), mounted
    /// the same way: Alertmanager reads it with `url_file`, so the URL is in no config.
    public static let watchdogSecretName = "nodeagent-heartbeat"
    public static let mountedWatchdogURLPath = "/etc/alertmanager/secrets/\(watchdogSecretName)/url"
    /// The Alertmanager image when the Watchdog goes to a webhook: the chart's v0.27.0
    /// (kube-prometheus-stack 67.4.0, values.yaml `alertmanager.alertmanagerSpec.image.tag`) has
    /// `url_file` (added in v0.26.0) but panics when a `url_file` webhook answers other than 2xx
    /// (prometheus/alertmanager#3798, fixed by #3800 in v0.28.0).
    public static let watchdogAlertmanagerTag = "v0.28.1"

    /// Where the chart's always-firing Watchdog alert goes.
    public enum Watchdog: Sendable {
        /// A webhook whose URL Alertmanager reads from a file (≥ v0.26): what nodes get.
        case urlFile(String)
        /// The URL inline: only for an Alertmanager older than v0.26 (the tests' Debian 0.25).
        case url(String)
    }

    /// The synthetic alert `nodeagent alerts test` sends.
    public static let testAlertName = "NodeagentTestAlert"

    // MARK: - Alertmanager

    /// Alertmanager's configuration: one email receiver (the password read from a file,
    /// never inline), grouping by alert, critical alerts repeated hourly and others every 12 h,
    /// warnings and infos inhibited by a critical of the same alert, the Watchdog and
    /// InfoInhibitor heartbeats of the chart sent nowhere, and the test alert delivered at once.
    /// With `watchdog`, the Watchdog alert goes to that webhook every minute (a dead-man's
    /// switch for the alerting pipeline itself) instead of nowhere.
    public static func alertmanager(_ email: AlertingSpec.Email?, passwordPath: String = mountedPasswordPath,
                                    watchdog: Watchdog? = nil) -> JSONValue {
        var global: [JSONValue.Member] = [.init("resolve_timeout", .string("5m"))]
        var receivers: [JSONValue] = [.object(["name": .string("null")])]
        let watchdogRoute: JSONValue
        if let watchdog {
            let target: JSONValue.Member = switch watchdog {
            case .urlFile(let path): .init("url_file", .string(path))
            case .url(let url): .init("url", .string(url))
            }
            receivers.append(.object([.init("name", .string("heartbeat-watchdog")),
                                      .init("webhook_configs", .array([.object([target, .init("send_resolved", .bool(false))])]))]))
            watchdogRoute = .object(["matchers": .array([.string("alertname = \"Watchdog\"")]), "receiver": .string("heartbeat-watchdog"),
                                     "group_by": .array([.string("alertname")]), "group_wait": .string("0s"),
                                     "group_interval": .string("1m"), "repeat_interval": .string("1m")])
        } else {
            watchdogRoute = .object(["matchers": .array([.string("alertname = \"Watchdog\"")]), "receiver": .string("null")])
        }
        var routes: [JSONValue] = [
            watchdogRoute,
            .object(["matchers": .array([.string("alertname = \"InfoInhibitor\"")]), "receiver": .string("null")]),
        ]
        if let email {
            global += [
                .init("smtp_smarthost", .string(email.smarthost.description)),
                .init("smtp_from", .string(email.from.description)),
                .init("smtp_require_tls", .bool(email.requireTLS)),
            ]
            if let user = email.username {
                global.append(.init("smtp_auth_username", .string(user)))
                global.append(.init("smtp_auth_password_file", .string(passwordPath)))
            }
            routes += [
                // Each `alerts test` run has its own test_id: its own group, mailed at once.
                .object(["matchers": .array([.string("alertname = \"\(testAlertName)\"")]), "receiver": .string("email"),
                         "group_by": .array([.string("alertname"), .string("test_id")]),
                         "group_wait": .string("0s"), "repeat_interval": .string("1h")]),
                .object(["matchers": .array([.string("severity = \"critical\"")]), "receiver": .string("email"),
                         "repeat_interval": .string("1h")]),
            ]
            receivers.append(.object(["name": .string("email"), "email_configs": .array([.object([
                "to": .string(email.to.map(\.description).joined(separator: ", ")),
                "send_resolved": .bool(true),
            ])])]))
        }
        return .object([
            "global": .object(global),
            "route": .object([
                "receiver": .string(email == nil ? "null" : "email"),
                "group_by": .array([.string("alertname"), .string("severity")]),
                "group_wait": .string("30s"), "group_interval": .string("5m"), "repeat_interval": .string("12h"),
                "routes": .array(routes),
            ]),
            "inhibit_rules": .array([
                .object(["source_matchers": .array([.string("severity = \"critical\"")]),
                         "target_matchers": .array([.string("severity =~ \"warning|info\"")]), "equal": .array([.string("alertname")])]),
                .object(["source_matchers": .array([.string("severity = \"warning\"")]),
                         "target_matchers": .array([.string("severity = \"info\"")]), "equal": .array([.string("alertname")])]),
                .object(["source_matchers": .array([.string("alertname = \"InfoInhibitor\"")]),
                         "target_matchers": .array([.string("severity = \"info\"")]), "equal": .array([.string("namespace")])]),
            ]),
            "receivers": .array(receivers),
            "templates": .array([.string("/etc/alertmanager/config/*.tmpl")]),
        ])
    }

    // MARK: - kube-prometheus-stack values

    /// What nodeagent sets in the kube-prometheus-stack release (through a HelmChartConfig):
    /// the Alertmanager config and its password Secret, and no scrape jobs or rules for the
    /// control-plane parts K3s runs inside its one process and does not expose
    /// (controller-manager, scheduler, proxy, etcd), which would otherwise fire at once.
    public static func values(_ spec: AlertingSpec, heartbeat: HeartbeatSpec? = nil) -> JSONValue {
        let watchdog = heartbeat?.watchdogURLFile.map { _ in Watchdog.urlFile(mountedWatchdogURLPath) }
        var alertmanager: [JSONValue.Member] = [.init("config", alertmanager(spec.email, watchdog: watchdog))]
        var secrets: [JSONValue] = []
        if spec.email?.passwordFile != nil { secrets.append(.string(secretName)) }
        if watchdog != nil { secrets.append(.string(watchdogSecretName)) }
        var alertmanagerSpec: [JSONValue.Member] = []
        if !secrets.isEmpty { alertmanagerSpec.append(.init("secrets", .array(secrets))) }
        if watchdog != nil { alertmanagerSpec.append(.init("image", .object(["tag": .string(watchdogAlertmanagerTag)]))) }
        if !alertmanagerSpec.isEmpty { alertmanager.append(.init("alertmanagerSpec", .object(alertmanagerSpec))) }
        return .object([
            "alertmanager": .object(alertmanager),
            "kubeControllerManager": .object(["enabled": .bool(false)]),
            "kubeScheduler": .object(["enabled": .bool(false)]),
            "kubeProxy": .object(["enabled": .bool(false)]),
            "kubeEtcd": .object(["enabled": .bool(false)]),
            "defaultRules": .object(["rules": .object([
                "etcd": .bool(false), "kubeControllerManager": .bool(false), "kubeProxy": .bool(false),
                "kubeSchedulerAlerting": .bool(false), "kubeSchedulerRecording": .bool(false),
            ])]),
            "grafana": .object(["sidecar": .object(["dashboards": .object([
                "enabled": .bool(true), "label": .string("grafana_dashboard"), "labelValue": .string("1"), "searchNamespace": .string("ALL"),
            ])])]),
        ])
    }

    // MARK: - Rules

    /// The address Prometheus scrapes nodeagent at: `spec.status.listen`, unless it is loopback.
    static func scrapeAddress(_ platform: Platform) -> (ip: IPAddress, port: Int)? {
        guard let listen = platform.spec.status?.listen, let ip = try? IPAddress(parsing: listen.host),
              ip.isIPv4 ? ip.bytes[0] != 127 : ip.bytes != [UInt8](repeating: 0, count: 15) + [1] else { return nil }
        return (ip, Int(listen.port.value))
    }

    /// nodeagent's alerting rules, as Prometheus rule groups (a PrometheusRule's `spec.groups`).
    /// The scrape rules only when Prometheus has a target to scrape (a VPN `status.listen`).
    public static func ruleGroups(_ platform: Platform) -> JSONValue {
        let scraped = scrapeAddress(platform) != nil
        func rule(_ name: String, _ expr: String, for duration: String, _ severity: String, _ summary: String, _ description: String) -> JSONValue {
            .object([
                "alert": .string(name), "expr": .string(expr), "for": .string(duration),
                "labels": .object(["severity": .string(severity)]),
                "annotations": .object(["summary": .string(summary), "description": .string(description)]),
            ])
        }
        var rules: [JSONValue] = scraped ? [
            rule("NodeagentDown", "up{job=\"nodeagent\"} == 0", for: "5m", "critical",
                 "nodeagent does not answer on the node's VPN address",
                 "Prometheus cannot scrape nodeagent at {{ $labels.instance }}: the agent is down, or the WireGuard interface (which holds that address) is gone."),
            rule("NodeagentNotScraped", "absent(up{job=\"nodeagent\"})", for: "10m", "critical",
                 "Prometheus does not scrape nodeagent at all",
                 "There is no nodeagent scrape target: its Service, Endpoints or ServiceMonitor is missing."),
        ] : []
        rules += [
            rule("NodeagentReconcileFailing", "nodeagent_reconciler_ready == 0", for: "15m", "warning",
                 "nodeagent's {{ $labels.reconciler }} reconciler has not been Ready for 15 minutes",
                 "See the reconciler's condition: curl http://VPN-ADDRESS:9430/status, or nodeagent status."),
            rule("NodeagentNeedsAPerson", "nodeagent_reconciler_stalled == 1", for: "5m", "warning",
                 "nodeagent's {{ $labels.reconciler }} reconciler is stalled: retrying cannot help",
                 "A person must act (a missing user, interface or secret file, a refused field, a rolled-back upgrade): nodeagent status gives the reason and what to do."),
            rule("NodeagentDesiredStateNotApplied", "nodeagent_converged == 0", for: "30m", "warning",
                 "The desired state has not been fully applied for 30 minutes",
                 "nodeagent has not converged every declared section; nodeagent status names the ones that are not Ready."),
            rule("NodeagentSourceFailing", "nodeagent_source_up == 0", for: "30m", "warning",
                 "nodeagent cannot take the newest desired state from Git",
                 "The last fetch gave no valid, verified revision (unreachable, unsigned, rewritten history or invalid file); nodeagent source says why."),
            rule("NodeNotReady", "kube_node_status_condition{condition=\"Ready\",status=\"true\"} == 0", for: "5m", "critical",
                 "The Kubernetes node {{ $labels.node }} is not Ready",
                 "The kubelet on {{ $labels.node }} reports not Ready: workloads are not being scheduled or are failing."),
            rule("NodeDiskFillingUp",
                 "(node_filesystem_avail_bytes{fstype!~\"tmpfs|overlay|squashfs\"} / node_filesystem_size_bytes{fstype!~\"tmpfs|overlay|squashfs\"} < 0.15) and (predict_linear(node_filesystem_avail_bytes{fstype!~\"tmpfs|overlay|squashfs\"}[6h], 24 * 3600) < 0)",
                 for: "30m", "critical",
                 "{{ $labels.mountpoint }} is over 85% full and will be full within 24 hours",
                 "At the rate of the last 6 hours, {{ $labels.mountpoint }} on {{ $labels.instance }} fills up within a day."),
            rule("WireGuardInterfaceDown", "nodeagent_wireguard_up == 0", for: "5m", "critical",
                 "WireGuard interface {{ $labels.interface }} is down",
                 "The interface exists but is down (if it were gone, its address would be too, and NodeagentDown fires instead). The VPN is the only way to the Kubernetes API, the status endpoint and PostgreSQL: use the provider's console."),
            rule("K3sCertificateExpiringSoon", "nodeagent_k3s_certificate_expiry_timestamp_seconds - time() < 14 * 86400", for: "1h", "critical",
                 "K3s certificate {{ $labels.file }} expires within 14 days",
                 "K3s renews its leaf certificates on restart when they expire within 90 days: systemctl restart k3s. A CA certificate (*-ca.crt) is not renewed that way: rotate it with k3s certificate rotate-ca."),
        ]
        if let backups = platform.spec.backups?.postgres {
            let gap = maxGapSeconds(backups.schedule) + 3600
            rules += [
                rule("NodeagentBackupTooOld", "time() - nodeagent_backup_last_success_timestamp_seconds > \(gap)", for: "10m", "critical",
                     "The newest good backup of {{ $labels.database }} is older than its schedule allows",
                     "The schedule \(backups.schedule) (UTC) should have produced a newer dump: nodeagent backup list; nodeagent status."),
                rule("NodeagentBackupFailing", "nodeagent_backup_last_result_ok == 0", for: "10m", "warning",
                     "The last backup of {{ $labels.database }} failed",
                     "Earlier dumps are kept; see the reason in nodeagent status or the backups state file."),
            ]
            if let drill = backups.restoreDrill, drill.enabled {
                let drillGap = maxGapSeconds(drill.schedule) + 86_400
                rules += [
                    rule("NodeagentRestoreDrillFailed", "nodeagent_restore_drill_last_result_ok == 0", for: "1m", "critical",
                         "The last restore drill failed",
                         "A backup that does not restore is no backup: nodeagent backup drill shows why (checksum, row counts, restore)."),
                    rule("NodeagentRestoreDrillTooOld", "time() - nodeagent_restore_drill_last_success_timestamp_seconds > \(drillGap)",
                         for: "1h", "warning",
                         "No restore drill has verified the backups for longer than its schedule allows",
                         "The drill schedule \(drill.schedule) (UTC) should have run; nodeagent backup drill runs one now."),
                ]
            }
        }
        if let offsite = platform.spec.backups?.offsite {
            let schedule = platform.spec.backups?.postgres?.schedule ?? offsite.schedule ?? OffsiteSpec.defaultSchedule
            let gap = maxGapSeconds(schedule) + 3600
            rules += [
                rule("NodeagentOffsiteBackupTooOld", "time() - nodeagent_offsite_last_success_timestamp_seconds > \(gap)", for: "10m", "critical",
                     "The newest off-site copy of the node is older than its schedule allows",
                     "The schedule \(schedule) (UTC) should have copied the node off-site again: if the VPS is lost now, more is lost with it. nodeagent backup list --offsite; nodeagent status."),
                rule("NodeagentOffsiteCopyFailing", "nodeagent_offsite_last_result_ok == 0", for: "10m", "warning",
                     "The last off-site copy failed",
                     "The repository did not take the copy (unreachable, wrong key, full, host key changed): the reason is in nodeagent status (offsite)."),
                rule("NodeagentOffsiteCheckFailed", "nodeagent_offsite_check_ok == 0", for: "1m", "critical",
                     "restic check found the off-site repository damaged",
                     "The copy that must survive the node may not restore: run nodeagent backup check, then restic repair or a new repository (docs/operations.md)."),
            ]
        }
        return .array([.object(["name": .string("nodeagent"), "rules": .array(rules)])])
    }

    /// The longest time between two firings of a schedule over the next year (at most).
    static func maxGapSeconds(_ schedule: CronSchedule) -> Int {
        var at = Timestamp(millisecondsSinceEpoch: 1_798_761_600_000)   // 2027-01-01, a fixed start: stable output
        var longest: Int64 = 0
        for _ in 0..<200_000 {   // a year of firings of anything up to every few minutes
            guard let next = schedule.next(after: at) else { break }
            if let after = schedule.next(after: next) { longest = max(longest, after.millisecondsSinceEpoch - next.millisecondsSinceEpoch) }
            at = next
            if at.millisecondsSinceEpoch > 1_798_761_600_000 + 366 * 86_400_000 { break }
        }
        return Int(longest / 1000)
    }
}
