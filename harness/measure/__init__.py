"""Measurement beside the services: what was counted on the wire (scapy, `wire`), not what the services say;
`tcpdump` is the independent capture the wire counts are checked against (docs/measure.md)."""
