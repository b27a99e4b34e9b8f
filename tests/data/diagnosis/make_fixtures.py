"""Writes one small Exchange log per diagnosis under this folder: the lines that show the
problem, written after the signatures in the diagnosis research and the log shapes in
exchange-log-formats.md, plus a healthy session or message that must stay undiagnosed.

Run from anywhere: python3 make_fixtures.py. The files are committed; this script documents
how they were made and regenerates them.
"""
import os

HERE = os.path.dirname(os.path.abspath(__file__))

HEAD = {
    "send": ("SMTP Send Protocol Log",
             "date-time,connector-id,session-id,sequence-number,local-endpoint,remote-endpoint,event,data,context"),
    "recv": ("SMTP Receive Protocol Log",
             "date-time,connector-id,session-id,sequence-number,local-endpoint,remote-endpoint,event,data,context"),
    "mt": ("Message Tracking Log",
           "date-time,client-ip,client-hostname,server-ip,server-hostname,source-context,connector-id,source,"
           "event-id,internal-message-id,message-id,network-message-id,recipient-address,recipient-status,"
           "total-bytes,recipient-count,related-recipient-address,reference,message-subject,sender-address,"
           "return-path,message-info,directionality,tenant-id,original-client-ip,original-server-ip,custom-data,"
           "transport-traffic-type,log-id,schema-version"),
    "conn": ("Transport Connectivity Log", "date-time,session,source,destination,direction,description"),
}


def header(kind):
    log_type, fields = HEAD[kind]
    return (f"#Software: Microsoft Exchange Server\r\n#Version: 15.02.1544.004\r\n#Log-type: {log_type}\r\n"
            f"#Date: 2025-01-14T09:00:00.000Z\r\n#Fields: {fields}\r\n")


def q(v):
    return '"' + v.replace('"', '""') + '"' if ("," in v or '"' in v) else v


class Session:
    def __init__(self, kind, sid, connector, local, remote, t0=0):
        self.kind, self.sid, self.connector, self.local, self.remote = kind, sid, connector, local, remote
        self.seq, self.t = 0, t0
        self.lines = []

    def __call__(self, event, data="", context=""):
        ts = f"2025-01-14T09:{self.t // 60:02d}:{self.t % 60:02d}.{self.seq:03d}Z"
        self.lines.append(",".join([ts, q(self.connector), self.sid, str(self.seq), self.local, self.remote,
                                    event, q(data), q(context)]))
        self.seq += 1
        return self


def healthy_send(t0=30):
    s = Session("send", "08DD34A1B2C3D4E5", "Internet", "10.0.0.5:50123", "203.0.113.25:25", t0)
    s("*", "", "attempting to connect")("+")("<", "220 mx.fabrikam.com Microsoft ESMTP MAIL Service ready")
    s(">", "EHLO ex01.contoso.com")("<", "250-mx.fabrikam.com Hello [10.0.0.5] 250-SIZE 37748736 250-STARTTLS 250 CHUNKING")
    s(">", "STARTTLS")("<", "220 2.0.0 SMTP server ready")
    s("*", "", "Sending certificate")("*", "CN=mail.contoso.com, O=Contoso Ltd, C=US", "Certificate subject")
    s("*", "AB12CD34EF56AB12CD34EF56AB12CD34EF56AB12", "Certificate thumbprint")
    s("*", "", "TLS protocol SP_PROT_TLS1_2_CLIENT negotiation succeeded using bulk encryption algorithm CALG_AES_256 with strength 256 bits")
    s(">", "MAIL FROM:<alice@contoso.com> SIZE=2048")("<", "250 2.1.0 Sender OK")
    s(">", "RCPT TO:<bob@fabrikam.com>")("<", "250 2.1.5 Recipient OK")
    s(">", "BDAT 2048 LAST")("<", "250 2.6.0 <a1@contoso.com> [InternalId=1] Queued mail for delivery")
    s(">", "QUIT")("<", "221 2.0.0 Service closing transmission channel")("-", "", "Local")
    return s.lines


def healthy_recv(t0=30):
    s = Session("recv", "08DD34A1B2C3D4F0", "EX01\\Default Frontend EX01", "10.0.0.5:25", "198.51.100.7:41234", t0)
    s("+")("*", "SMTPSubmit SMTPAcceptAnyRecipient SMTPAcceptAnySender", "Set Session Permissions")
    s(">", "220 ex01.contoso.com Microsoft ESMTP MAIL Service ready")("<", "EHLO mail.fabrikam.com")
    s(">", "250  ex01.contoso.com Hello [198.51.100.7] SIZE 37748736 PIPELINING DSN ENHANCEDSTATUSCODES STARTTLS")
    s("<", "MAIL FROM:<carol@fabrikam.com>")(">", "250 2.1.0 Sender OK")
    s("<", "RCPT TO:<dave@contoso.com>")(">", "250 2.1.5 Recipient OK")
    s("<", "DATA")(">", "354 Start mail input; end with <CRLF>.<CRLF>")
    s(">", "250 2.6.0 <b2@fabrikam.com> [InternalId=2, Hostname=EX01] 3454 bytes in 0.777, 4.338 KB/sec Queued mail for delivery")
    s("<", "QUIT")(">", "221 2.0.0 Service closing transmission channel")("-", "", "Remote")
    return s.lines


def mt(event, status, recipient="bob@fabrikam.com", source="SMTP", t=10, extra_source_context=""):
    # server-hostname names the server that logged the event, except for SEND (the next hop).
    server = "mx.fabrikam.com" if event == "SEND" else "EX01"
    fields = [f"2025-01-14T09:00:{t:02d}.000Z", "10.0.0.5", "EX01", "203.0.113.25", server,
              extra_source_context, "Internet", source, event, "3741319", "<m1@contoso.com>",
              "7c1e8f9a-0b1c-4d2e-8f3a-5b6c7d8e9f00", recipient, status, "48211", "1", "", "",
              "Quarterly report", "alice@contoso.com", "alice@contoso.com", "", "Originating", "", "", "", "",
              "Email", "MessageTrackingLog", "15.02.1544.004"]
    return ",".join(q(f) for f in fields)


def healthy_mt():
    return [mt("RECEIVE", "", source="SMTP", t=1), mt("SEND", "250 2.6.0 <m1@contoso.com> Queued mail for delivery", t=2),
            mt("DELIVER", "", recipient="dave@contoso.com", source="STOREDRIVER", t=3)]


def send_failure(lines_after_rcpt=None, context_lines=None, cert=True, sid="08DD34A1B2C3D4AA"):
    s = Session("send", sid, "Internet", "10.0.0.5:50200", "192.0.2.40:25")
    s("*", "", "attempting to connect")("+")("<", "220 mx.example.net ESMTP ready")(">", "EHLO ex01.contoso.com")
    s("<", "250-mx.example.net Hello [10.0.0.5] 250-SIZE 20971520 250-STARTTLS 250 PIPELINING")
    if context_lines is not None:
        s(">", "STARTTLS")("<", "220 2.0.0 SMTP server ready")
        if cert:
            s("*", "", "Sending certificate")("*", "CN=mail.contoso.com, O=Contoso Ltd, C=US", "Certificate subject")
            s("*", "CN=Contoso Issuing CA 01, O=Contoso Ltd, C=US", "Certificate issuer name")
            s("*", "5A000000123456789ABCDEF00000000012", "Certificate serial number")
            s("*", "3F2504E04F8911D39A0C0305E82C3301ABCDEF12", "Certificate thumbprint")
        for c in context_lines:
            s("*", "", c)
        s("-", "", "Local")
        return s.lines
    s(">", "MAIL FROM:<alice@contoso.com> SIZE=48211")("<", "250 2.1.0 Sender OK")
    s(">", "RCPT TO:<bob@example.net>")
    for reply in lines_after_rcpt or []:
        s("<", reply)
    s(">", "QUIT")("-", "", "Local")
    return s.lines


def recv_failure(replies, contexts=(), sid="08DD34A1B2C3D4BB"):
    s = Session("recv", sid, "EX01\\Default Frontend EX01", "10.0.0.5:25", "198.51.100.99:50000")
    s("+")(">", "220 ex01.contoso.com Microsoft ESMTP MAIL Service ready")("<", "EHLO printer01")
    s(">", "250  ex01.contoso.com Hello [198.51.100.99] SIZE 37748736 PIPELINING STARTTLS AUTH NTLM LOGIN")
    s("<", "MAIL FROM:<scanner@contoso.com>")(">", "250 2.1.0 Sender OK")
    s("<", "RCPT TO:<someone@external.example>")
    for c in contexts:
        s("*", "", c)
    for r in replies:
        s(">", r)
    s("-", "", "Remote")
    return s.lines


CASES = {
    # ---- the founding cases
    "TLS.CERT_NO_PRIVATE_KEY": ("send", send_failure(context_lines=["TLS negotiation failed with error NoCredentials"]) + healthy_send()),
    "TLS.CERT_NOT_BOUND_SMTP": ("send", send_failure(context_lines=["TLS negotiation failed with error UnknownCredentials"]) + healthy_send()),
    "AUTH.KERBEROS_CLOCK_SKEW_OR_AD": ("send", send_failure(lines_after_rcpt=[]) [:6] + [
        ",".join(["2025-01-14T09:00:01.010Z", "Intra-Organization SMTP Send Connector", "08DD34A1B2C3D4AA", "6",
                  "10.0.0.5:50200", "10.0.0.6:25", ">", "X-EXPS GSSAPI", ""]),
        ",".join(["2025-01-14T09:00:01.020Z", "Intra-Organization SMTP Send Connector", "08DD34A1B2C3D4AA", "7",
                  "10.0.0.5:50200", "10.0.0.6:25", "<", "454 4.7.0 Temporary authentication failure", ""]),
    ] + healthy_send()),
    "EVENT.SMTP_SEND_NEGATIVE_ACK": ("send", send_failure(["250 2.1.5 Recipient OK", "550 5.0.350 Remote server returned an error: message rejected by the destination policy"]) + healthy_send()),
    # ---- TLS
    "TLS.PROTOCOL_OR_CIPHER_MISMATCH": ("send", send_failure(context_lines=["TLS negotiation failed with error AlgorithmMismatch"]) + healthy_send()),
    "TLS.HANDSHAKE_SOCKET_ERROR": ("send", send_failure(context_lines=["TLS negotiation failed with error SocketError"]) + healthy_send()),
    "TLS.REQUIRED_NOT_OFFERED": ("send", send_failure(["451 5.7.3 STARTTLS is required to send mail"]) + healthy_send()),
    "TLS.STARTTLS_MASKED_BY_FIREWALL": ("send", Session("send", "08DD34A1B2C3D4CC", "Internet", "10.0.0.5:50300", "192.0.2.41:25")
        ("*", "", "attempting to connect")("+")("<", "220 ********************************")(">", "EHLO ex01.contoso.com")
        ("<", "250-mx.example.org Hello [10.0.0.5] 250-SIZE 10485760 250-XXXXXXXA 250 PIPELINING")(">", "QUIT")("-", "", "Local").lines + healthy_send()),
    "NET.REMOTE_DROPPED_SUSPICIOUS": ("mt", [mt("DEFER", "451 4.4.0 SMTPSEND.SuspiciousRemoteServerError; remote server disconnected abruptly; retry will be delayed")] + healthy_mt()),
    # ---- AUTH
    "AUTH.EXCHANGE_AUTH_NOT_ACHIEVED": ("mt", [mt("DEFER", "451 4.4.395 Target host responded with error. -> 451 5.7.3 Cannot achieve Exchange Server authentication")] + healthy_mt()),
    "AUTH.CLIENT_CREDENTIALS_REJECTED": ("recv", recv_failure(["535 5.7.3 Authentication unsuccessful"], contexts=["Inbound AUTH LOGIN failed because of LogonDenied"]) + healthy_recv()),
    "AUTH.ANONYMOUS_NOT_PERMITTED": ("recv", recv_failure(["530 5.7.1 Client was not authenticated"]) + healthy_recv()),
    # ---- NET
    "NET.CONNECTION_REFUSED": ("conn", [
        "2025-01-14T09:00:01.000Z,08DD34A1B2C3D4DD,SMTP,fabrikam.com,+,Internet;MessagesToBeDelivered:1",
        "2025-01-14T09:00:01.100Z,08DD34A1B2C3D4DD,SMTP,fabrikam.com,>,mx.fabrikam.com[203.0.113.25]",
        "2025-01-14T09:00:02.100Z,08DD34A1B2C3D4DD,SMTP,fabrikam.com,-,Failed connection to 203.0.113.25:25 (ConnectionRefused:0000274D)[]",
        "2025-01-14T09:00:05.000Z,08DD34A1B2C3D4DE,SMTP,example.org,+,Internet;MessagesToBeDelivered:2",
        "2025-01-14T09:00:05.100Z,08DD34A1B2C3D4DE,SMTP,example.org,>,mx.example.org[192.0.2.80]",
        "2025-01-14T09:00:06.100Z,08DD34A1B2C3D4DE,SMTP,example.org,-,Messages: 2 Bytes: 96422 Recipients: 2",
    ]),
    "NET.CONNECT_TIMEOUT": ("mt", [mt("DEFER", "441 4.4.1 Error encountered while communicating with primary target IP address: \"Failed to connect. Winsock error code: 10060, Win32 error code: 10060.\" Attempted failover to alternate host, but that did not succeed.")] + healthy_mt()),
    "NET.CONNECTION_DROPPED": ("mt", [mt("DEFER", "451 4.4.397 Error communicating with target host. -> 421 4.4.2 Connection dropped due to SocketError")] + healthy_mt()),
    "NET.REMOTE_TIMEOUT_EXCEEDED": ("send", send_failure(["250 2.1.5 Recipient OK", "421 4.4.2 mx.example.net Error: timeout exceeded"]) + healthy_send()),
    "NET.FRONTEND_PROXY_FAILURE": ("recv", recv_failure(["451 4.7.0 Temporary server error. Please try again later. PRX5"]) + healthy_recv()),
    "NET.FAILOVER_EXHAUSTED": ("mt", [mt("DEFER", "451 4.4.0 Primary target IP address responded with: \"\" Attempted failover to alternate host, but that did not succeed. Either there are no alternate hosts, or delivery failed to all alternate hosts.")] + healthy_mt()),
    # ---- DNS
    "DNS.NXDOMAIN": ("mt", [mt("FAIL", "554 5.4.4 SMTPSEND.DNS.NonExistentDomain; nonexistent domain", recipient="bob@fabrikm.com")] + healthy_mt()),
    "DNS.QUERY_FAILED": ("mt", [mt("DEFER", "451 4.4.0 DNS query failed. The error was: DNS query failed with error ErrorRetry")] + healthy_mt()),
    # ---- queues and routing
    "QUEUE.MESSAGE_EXPIRED": ("mt", [mt("FAIL", "550 4.4.7 QUEUE.Expired; message expired", source="DSN")] + healthy_mt()),
    "ROUTE.LOOP_HOP_COUNT": ("mt", [mt("FAIL", "554 5.4.14 Hop count exceeded - possible mail loop ATTR34")] + healthy_mt()),
    "ROUTE.LEGACY_X500_NOT_FOUND": ("mt", [mt("FAIL", "550 5.1.1 RESOLVER.ADR.ExRecipNotFound; not found", recipient="IMCEAEX-_O=CONTOSO_OU=EXCHANGE+20ADMINISTRATIVE+20GROUP_CN=RECIPIENTS_CN=bob@contoso.com", source="ROUTING")] + healthy_mt()),
    # ---- resources
    "RESOURCE.BACKPRESSURE_DISK": ("recv", recv_failure(["452 4.3.1 Insufficient system resources (UsedDiskSpace[C:\\Program Files\\Microsoft\\Exchange Server\\V15\\TransportRoles\\data\\Queue])"]) + healthy_recv()),
    "RESOURCE.POISON_MESSAGE": ("mt", [mt("POISONMESSAGE", "", source="QUEUE")] + healthy_mt()),
    "RESOURCE.COMPONENT_INACTIVE": ("send", send_failure(["421 4.3.2 Service not available, closing transmission channel"]) + healthy_send()),
    # ---- addresses, mailboxes, sizes
    "ADDR.RECIPIENT_NOT_FOUND_ONPREM": ("mt", [mt("FAIL", "550 5.1.1 RESOLVER.ADR.RecipNotFound; not found", recipient="nobody@contoso.com", source="ROUTING")] + healthy_mt()),
    "ADDR.REMOTE_USER_UNKNOWN": ("mt", [mt("FAIL", "550 5.1.1 <bob@example.net>: Recipient address rejected: User unknown in virtual mailbox table")] + healthy_mt()),
    "MBX.FULL": ("mt", [mt("FAIL", "554 5.2.2 mailbox full; STOREDRV.Deliver.Exception:QuotaExceededException.MapiExceptionShutoffQuotaExceeded", recipient="dave@contoso.com", source="STOREDRIVER")] + healthy_mt()),
    "SIZE.MESSAGE_TOO_BIG": ("send", send_failure(["250 2.1.5 Recipient OK", "552 5.3.4 Message size exceeds fixed maximum message size"]) + healthy_send()),
    "CONTENT.BARE_LINEFEED": ("mt", [mt("FAIL", "550 5.6.11 SMTPSEND.BareLinefeedsAreIllegal; message contains bare linefeeds, which cannot be sent via DATA")] + healthy_mt()),
    # ---- policy and reputation
    "POLICY.RELAY_DENIED_ONPREM": ("recv", recv_failure(["550 5.7.54 SMTP; Unable to relay recipient in non-accepted domain"], contexts=["Tarpit for '0.00:00:05' due to '550 5.7.54 SMTP; Unable to relay recipient in non-accepted domain'"]) + healthy_recv()),
    "REPUTATION.EOP_BANNED_IP": ("send", send_failure(["550 5.7.606 Access denied, banned sending IP [10.0.0.5]. To request removal from this list please visit https://sender.office.com/ and follow the directions. AS(1430)"]) + healthy_send()),
    "REPUTATION.EOP_THIRD_PARTY_RBL": ("mt", [mt("FAIL", "550 5.7.1 Service unavailable; Client host [10.0.0.5] blocked using Spamhaus. To request removal from this list see https://www.spamhaus.org/query/ip/10.0.0.5 AS(1410)")] + healthy_mt()),
    "HYBRID.TENANT_ATTRIBUTION": ("mt", [mt("DEFER", "451 4.4.395 Target host responded with error. -> 550 5.7.64 TenantAttribution; Relay Access Denied")] + healthy_mt()),
    "SEC.DMARC_REJECT": ("send", send_failure(["550 5.7.509 Access denied, sending domain [CONTOSO.COM] does not pass DMARC verification and has a DMARC policy of reject."]) + healthy_send()),
    "THROTTLE.EOP_IP_GRAYLIST": ("send", send_failure(["451 4.7.500 Server busy. Please try again later from [10.0.0.5]. (S77714) [DB5EUR03FT011.eop-EUR03.prod.protection.outlook.com]"]) + healthy_send()),
    # ---- the generic fallback
    "ESC.5.2.1": ("mt", [mt("FAIL", "550 5.2.1 The email account that you tried to reach is disabled")] + healthy_mt()),
}

for code, (kind, lines) in CASES.items():
    with open(os.path.join(HERE, f"{code}.log"), "w", newline="") as f:
        f.write(header(kind) + "\r\n".join(lines) + "\r\n")
print(len(CASES), "fixtures")

# The founding case end to end, as an admin copies it from one server: the send log shows the
# certificate failure, message tracking shows the deferral it causes (421 4.4.1 behind the
# failover wrapper). mailflow must name the certificate, with its thumbprint, as the cause.
LINKED = os.path.join(HERE, "..", "diagnosis-linked", "EX01")
for sub, kind, lines in [
    ("SmtpSend/SEND20250114-1.LOG", "send",
     send_failure(context_lines=["TLS negotiation failed with error NoCredentials"]) + healthy_send()),
    ("MessageTracking/MSGTRK2025011409-1.LOG", "mt",
     [mt("DEFER", "451 4.4.0 Primary target IP address responded with: \"421 4.4.1 Connection timed out.\" "
                  "Attempted failover to alternate host, but that did not succeed. Either there are no alternate "
                  "hosts, or delivery failed to all alternate hosts.")] + healthy_mt()),
]:
    path = os.path.join(LINKED, sub)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", newline="") as f:
        f.write(header(kind) + "\r\n".join(lines) + "\r\n")


# One message across two servers: EX01 receives it from a client and sends it on to EX02, which
# delivers one recipient and fails the other. Message correlation must see one message.
def hop(server, event, status, recipient, t, source="SMTP", internal="3741319"):
    fields = [f"2025-01-14T09:00:{t:02d}.000Z", "10.0.0.5", "EX01", "10.0.0.6", server, "", "Intra-Organization SMTP Send Connector",
              source, event, internal, "<x-server@contoso.com>", "7c1e8f9a-0b1c-4d2e-8f3a-5b6c7d8e9f11", recipient, status,
              "9120", "2", "", "", "Crossing servers", "alice@contoso.com", "alice@contoso.com", "", "Originating", "", "", "",
              "S:E2ELatency=2.5" if event == "DELIVER" else "", "Email", "MessageTrackingLog", "15.02.1544.004"]
    return ",".join(q(f) for f in fields)

CROSS = os.path.join(HERE, "..", "diagnosis-cross-server")
for server, lines in [
    ("EX01", [hop("EX01", "RECEIVE", "", "bob@contoso.com;nobody@contoso.com", 1),
              hop("EX01", "SEND", "250 2.1.5 Recipient OK", "bob@contoso.com;nobody@contoso.com", 2)]),
    ("EX02", [hop("EX02", "RECEIVE", "", "bob@contoso.com;nobody@contoso.com", 3, internal="98765"),
              hop("EX02", "DELIVER", "", "bob@contoso.com", 4, source="STOREDRIVER", internal="98765"),
              hop("EX02", "FAIL", "550 5.1.1 RESOLVER.ADR.RecipNotFound; not found", "nobody@contoso.com", 5, source="ROUTING", internal="98765")]),
]:
    path = os.path.join(CROSS, server, "MessageTracking", "MSGTRK2025011409-1.LOG")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", newline="") as f:
        f.write(header("mt") + "\r\n".join(lines) + "\r\n")
