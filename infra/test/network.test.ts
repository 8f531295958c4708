// The network: three zones, tasks in private subnets without public IPs, and security groups
// that open only the platform's own connections.
import { Match } from 'aws-cdk-lib/assertions';
import { logicalId, resourcesOf, synth, Synth } from './synth';

let s: Synth;
beforeAll(() => {
  s = synth();
});

interface Rule {
  readonly group: string;
  readonly cidr?: string;
  readonly from?: string;
  readonly port: number;
  readonly toPort: number;
  readonly protocol: string;
}

/** Every ingress rule, inline or standalone, with the logical id of the group it opens. */
function ingressRules(t: Synth): Rule[] {
  const rules: Rule[] = [];
  for (const [id, sg] of resourcesOf(t, 'AWS::EC2::SecurityGroup')) {
    for (const r of sg.Properties!.SecurityGroupIngress ?? []) {
      rules.push({ group: id, cidr: r.CidrIp ?? r.CidrIpv6, from: r.SourceSecurityGroupId?.['Fn::GetAtt']?.[0], port: r.FromPort, toPort: r.ToPort, protocol: r.IpProtocol });
    }
  }
  for (const [, r] of resourcesOf(t, 'AWS::EC2::SecurityGroupIngress')) {
    const p = r.Properties!;
    rules.push({ group: p.GroupId['Fn::GetAtt'][0], cidr: p.CidrIp ?? p.CidrIpv6, from: p.SourceSecurityGroupId?.['Fn::GetAtt']?.[0], port: p.FromPort, toPort: p.ToPort, protocol: p.IpProtocol });
  }
  return rules;
}

const sg = (t: Synth, name: string) => logicalId(t, 'AWS::EC2::SecurityGroup', `Network${name}Sg`);

test('a VPC over three zones: public, private (NAT) and isolated subnets', () => {
  s.template.resourceCountIs('AWS::EC2::VPC', 1);
  const subnets = resourcesOf(s, 'AWS::EC2::Subnet');
  expect(subnets).toHaveLength(9);
  for (const tier of ['public', 'app', 'kafka']) {
    const zones = subnets
      .filter(([id]) => id.startsWith(`NetworkVpc${tier}Subnet`))
      .map(([, r]) => JSON.stringify(r.Properties!.AvailabilityZone));
    expect(new Set(zones).size).toBe(3);
  }
  s.template.resourceCountIs('AWS::EC2::NatGateway', 3);
  for (const [, subnet] of subnets) expect(subnet.Properties!.MapPublicIpOnLaunch).toBe(false);
});

test('zones named in context are used as given', () => {
  const named = synth({ availabilityZones: 'eu-west-1a,eu-west-1b,eu-west-1c', region: 'eu-west-1' });
  const zones = resourcesOf(named, 'AWS::EC2::Subnet').map(([, r]) => r.Properties!.AvailabilityZone);
  expect(new Set(zones)).toEqual(new Set(['eu-west-1a', 'eu-west-1b', 'eu-west-1c']));
});

test('no security group is open to the internet except the ALB, on 443 and 80 only', () => {
  const alb = sg(s, 'Alb');
  const open = ingressRules(s).filter((r) => r.cidr === '0.0.0.0/0' || r.cidr === '::/0');
  expect(open.length).toBeGreaterThan(0);
  for (const rule of open) {
    expect(rule.group).toBe(alb);
    expect(rule.port).toBe(rule.toPort);
    expect([443, 80]).toContain(rule.port);
  }
  expect(open.map((r) => r.port).sort()).toEqual([443, 80].sort());
});

test('each component accepts only its own port, from its own clients', () => {
  const expected = new Set([
    `Alb<-gateway:8080`,
    ...['Gateway', 'Processor', 'Connect'].map((c) => `${c}<-registry:8081`),
    ...['Gateway', 'Registry', 'Processor', 'Connect', 'Admin'].map((c) => `${c}<-msk:9096`),
    `Connect<-connect:8083`,
    // The metrics collector (observability.ts): /metrics and MSK's open monitoring, nothing else.
    `Collector<-gateway:8080`,
    `Collector<-processor:8082`,
    `Collector<-msk:11001`,
    `Collector<-msk:11002`,
  ]);
  const names: Record<string, string> = {};
  for (const n of ['Alb', 'Gateway', 'Registry', 'Processor', 'Connect', 'Admin', 'Msk']) names[sg(s, n)] = n;
  names[logicalId(s, 'AWS::EC2::SecurityGroup', 'ObservabilityCollectorSg')] = 'Collector';
  const actual = new Set(
    ingressRules(s)
      .filter((r) => r.from)
      .map((r) => {
        expect(r.port).toBe(r.toPort);
        expect(r.protocol).toBe('tcp');
        return `${names[r.from!]}<-${names[r.group].toLowerCase()}:${r.port}`;
      }),
  );
  expect(actual).toEqual(expected);
  // MSK: 9096 (SASL/SCRAM over TLS) for clients, no plaintext 9092, no TLS-only 9094, no IAM
  // 9098; the open-monitoring exporters for the collector alone.
  for (const r of ingressRules(s).filter((r) => r.group === sg(s, 'Msk'))) {
    expect(names[r.from!] === 'Collector' ? [11001, 11002] : [9096]).toContain(r.port);
  }
});

test('outbound traffic is limited too: no security group allows all outbound', () => {
  for (const [, group] of resourcesOf(s, 'AWS::EC2::SecurityGroup')) {
    for (const e of group.Properties!.SecurityGroupEgress ?? []) {
      expect(e.IpProtocol).not.toBe('-1');
    }
  }
  // The MSK brokers open no connections of their own.
  s.template.hasResourceProperties('AWS::EC2::SecurityGroup', {
    GroupDescription: 'tributary: MSK brokers',
    SecurityGroupEgress: [Match.objectLike({ CidrIp: '255.255.255.255/32' })],
  });
});

test('every ECS service runs in the private subnets without a public IP', () => {
  const services = resourcesOf(s, 'AWS::ECS::Service');
  expect(services.length).toBe(7); // gateway, registry, three processor slots, connect, collector
  for (const [, service] of services) {
    const vpc = service.Properties!.NetworkConfiguration.AwsvpcConfiguration;
    expect(vpc.AssignPublicIp).toBe('DISABLED');
    for (const subnet of vpc.Subnets) expect(subnet.Ref).toMatch(/^NetworkVpcappSubnet\d/);
  }
});

test('the ALB is the only thing in the public subnets', () => {
  s.template.hasResourceProperties('AWS::ElasticLoadBalancingV2::LoadBalancer', {
    Scheme: 'internet-facing',
    Subnets: Match.arrayWith([{ Ref: Match.stringLikeRegexp('^NetworkVpcpublicSubnet1') }]),
  });
});

test('rejected flows are logged', () => {
  s.template.hasResourceProperties('AWS::EC2::FlowLog', { TrafficType: 'REJECT', ResourceType: 'VPC' });
});

test('ingressCidrs narrows who reaches the ALB', () => {
  const narrow = synth({ ingressCidrs: '203.0.113.0/24,198.51.100.7/32' });
  const cidrs = ingressRules(narrow).filter((r) => r.cidr).map((r) => `${r.cidr}:${r.port}`).sort();
  expect(cidrs).toEqual(['198.51.100.7/32:443', '198.51.100.7/32:80', '203.0.113.0/24:443', '203.0.113.0/24:80']);
});
