"""Which addresses a webhook may reach: the default refusals and a deployment's allow-list."""

import ipaddress

import pytest

from workflow_engine.domain.addresses import DEFAULT_POLICY, AddressPolicy, refusal


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "a loopback address"),
        ("::1", "a loopback address"),
        ("0.0.0.0", "an unspecified address"),
        ("::", "an unspecified address"),
        ("10.1.2.3", "a private address"),
        ("172.16.0.1", "a private address"),
        ("192.168.1.1", "a private address"),
        ("fd12:3456::1", "a private address"),
        ("169.254.1.1", "a link-local address"),
        ("fe80::1", "a link-local address"),
        ("224.0.0.251", "a multicast address"),
        ("ff02::1", "a multicast address"),
        ("100.64.0.1", "a shared (carrier-grade NAT) address"),
        ("240.0.0.1", "a reserved address"),
        ("192.0.2.1", "a private address"),  # documentation (TEST-NET-1)
        ("169.254.169.254", "a cloud metadata address"),
        ("fd00:ec2::254", "a cloud metadata address"),
        ("100.100.100.200", "a cloud metadata address"),
        ("::ffff:127.0.0.1", "a loopback address"),  # IPv4-mapped
        ("::ffff:169.254.169.254", "a cloud metadata address"),
        ("64:ff9b::a00:1", "a private address"),  # NAT64 of 10.0.0.1
        ("2002:7f00:1::", "a loopback address"),  # 6to4 of 127.0.0.1
    ],
)
def test_internal_addresses_are_refused_by_default(address: str, reason: str) -> None:
    assert refusal(ipaddress.ip_address(address)) == reason


@pytest.mark.parametrize("address", ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c", "::ffff:8.8.8.8"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert refusal(ipaddress.ip_address(address)) is None


def test_an_allow_list_opens_named_hosts_addresses_and_networks() -> None:
    policy = AddressPolicy.allowing(["hooks.internal", "127.0.0.1", "10.0.0.0/8", " "])
    assert policy.allows_host("Hooks.Internal.")
    assert policy.refusal(ipaddress.ip_address("127.0.0.1")) is None
    assert policy.refusal(ipaddress.ip_address("::ffff:127.0.0.1")) is None
    assert policy.refusal(ipaddress.ip_address("10.200.0.1")) is None
    assert policy.refusal(ipaddress.ip_address("127.0.0.2")) == "a loopback address"
    assert policy.refusal(ipaddress.ip_address("169.254.169.254")) == "a cloud metadata address"
    with pytest.raises(ValueError, match=r"10\.0\.0\.0/33"):
        AddressPolicy.allowing(["10.0.0.0/33"])


@pytest.mark.parametrize(
    ("url", "refused"),
    [
        ("http://127.0.0.1:8000/openapi.json", "host 127.0.0.1 is a loopback address"),
        ("http://[::1]/x", "host ::1 is a loopback address"),
        ("https://LOCALHOST./x", "host 'localhost.' is a loopback address"),
        ("http://api.localhost/x", "host 'api.localhost' is a loopback address"),
        ("http://169.254.169.254/latest", "host 169.254.169.254 is a cloud metadata address"),
        ("https://hooks.example.com/x", None),  # a name: checked on what it resolves to, when called
        ("http://127.1/x", None),  # not an address to ipaddress; resolved (and refused) when called
        ("https://93.184.215.14/x", None),
    ],
)
def test_a_url_is_refused_on_its_literal_host(url: str, refused: str | None) -> None:
    assert DEFAULT_POLICY.url_refusal(url) == refused


def test_an_allowed_host_or_address_is_not_refused_on_its_url() -> None:
    policy = AddressPolicy.allowing(["localhost", "127.0.0.1"])
    assert policy.url_refusal("http://localhost:9000/x") is None
    assert policy.url_refusal("http://127.0.0.1:9000/x") is None
    assert policy.url_refusal("http://[::1]:9000/x") == "host ::1 is a loopback address"
