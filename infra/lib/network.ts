// The network: a VPC over three zones and one security group per component, each allowing only
// the connections the platform makes.
//
//   public subnets (/24)     the internet-facing ALB and the NAT gateways, nothing else
//   private subnets (/20)    ECS tasks: no public IP, out through NAT (ECR, Secrets Manager,
//                            CloudWatch Logs, Snowflake)
//   isolated subnets (/24)   the MSK brokers: no route to the internet at all
//
// Allowed connections (everything else is refused; security groups are stateful, so answers flow
// back on the same connection):
//
//   internet ──443/80──▶ ALB ──8080──▶ gateway
//   gateway, processor, Connect ──8081──▶ registry
//   gateway, registry, processor, Connect, one-off tasks ──9096 (SASL/SCRAM over TLS)──▶ MSK
//   Connect ◀──8083──▶ Connect (workers forward REST calls to the leader)
//   tasks ──443──▶ anywhere (AWS APIs through NAT or the S3 gateway endpoint, Snowflake)
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as kms from 'aws-cdk-lib/aws-kms';
import { RemovalPolicy } from 'aws-cdk-lib';
import { Construct } from 'constructs';
import { TributaryConfig } from './config';

/** MSK's port for SASL/SCRAM clients over TLS. */
export const MSK_SCRAM_PORT = 9096;
export const GATEWAY_PORT = 8080;
export const REGISTRY_PORT = 8081;
export const PROCESSOR_PORT = 8082;
export const CONNECT_PORT = 8083;

export interface NetworkProps {
  readonly config: TributaryConfig;
  readonly logKey: kms.IKey;
}

export class Network extends Construct {
  readonly vpc: ec2.Vpc;
  readonly albSg: ec2.SecurityGroup;
  readonly gatewaySg: ec2.SecurityGroup;
  readonly registrySg: ec2.SecurityGroup;
  readonly processorSg: ec2.SecurityGroup;
  readonly connectSg: ec2.SecurityGroup;
  /** One-off tasks such as `tributary topics apply`: Kafka only. */
  readonly adminSg: ec2.SecurityGroup;
  readonly mskSg: ec2.SecurityGroup;

  constructor(scope: Construct, id: string, props: NetworkProps) {
    super(scope, id);
    const cfg = props.config;

    this.vpc = new ec2.Vpc(this, 'Vpc', {
      ipAddresses: ec2.IpAddresses.cidr(cfg.vpcCidr),
      // The stack's three zones (tributary-stack.ts): from context or Fn::GetAZs.
      maxAzs: 3,
      natGateways: cfg.natGateways,
      // Nothing uses the default security group; restricting it needs a custom-resource Lambda.
      restrictDefaultSecurityGroup: false,
      subnetConfiguration: [
        { name: 'public', subnetType: ec2.SubnetType.PUBLIC, cidrMask: 24, mapPublicIpOnLaunch: false },
        { name: 'app', subnetType: ec2.SubnetType.PRIVATE_WITH_EGRESS, cidrMask: 20 },
        { name: 'kafka', subnetType: ec2.SubnetType.PRIVATE_ISOLATED, cidrMask: 24 },
      ],
      gatewayEndpoints: {
        // Image layers (ECR keeps them in S3) and archive writes skip the NAT gateways' per-GB fee.
        S3: { service: ec2.GatewayVpcEndpointAwsService.S3 },
      },
    });

    // Rejected connections only: what the security groups refuse is what is worth seeing.
    const flowLogGroup = new logs.LogGroup(this, 'FlowLogs', {
      logGroupName: `/${cfg.name}/vpc/flow-logs`,
      retention: cfg.logRetentionDays as logs.RetentionDays,
      encryptionKey: props.logKey,
      removalPolicy: RemovalPolicy.DESTROY,
    });
    this.vpc.addFlowLog('RejectedFlows', {
      destination: ec2.FlowLogDestination.toCloudWatchLogs(flowLogGroup),
      trafficType: ec2.FlowLogTrafficType.REJECT,
    });

    const sg = (sgId: string, description: string) =>
      new ec2.SecurityGroup(this, sgId, { vpc: this.vpc, description, allowAllOutbound: false });
    this.albSg = sg('AlbSg', `${cfg.name}: internet-facing ALB`);
    this.gatewaySg = sg('GatewaySg', `${cfg.name}: gateway tasks`);
    this.registrySg = sg('RegistrySg', `${cfg.name}: schema registry tasks`);
    this.processorSg = sg('ProcessorSg', `${cfg.name}: stream processor tasks`);
    this.connectSg = sg('ConnectSg', `${cfg.name}: Kafka Connect workers`);
    this.adminSg = sg('AdminSg', `${cfg.name}: one-off tasks (topics apply)`);
    this.mskSg = sg('MskSg', `${cfg.name}: MSK brokers`);

    // Internet → ALB, on the HTTPS listener and on the HTTP one that only redirects to it.
    for (const cidr of cfg.ingressCidrs) {
      this.albSg.addIngressRule(ec2.Peer.ipv4(cidr), ec2.Port.tcp(443), 'HTTPS from clients');
      this.albSg.addIngressRule(ec2.Peer.ipv4(cidr), ec2.Port.tcp(80), 'HTTP from clients, redirected to HTTPS');
    }
    allow(this.albSg, this.gatewaySg, GATEWAY_PORT, 'ALB to gateway');

    for (const client of [this.gatewaySg, this.processorSg, this.connectSg]) {
      allow(client, this.registrySg, REGISTRY_PORT, 'schema registry (Confluent API, basic auth)');
    }
    for (const client of [this.gatewaySg, this.registrySg, this.processorSg, this.connectSg, this.adminSg]) {
      allow(client, this.mskSg, MSK_SCRAM_PORT, 'Kafka over TLS with SASL/SCRAM');
      // ECR, Secrets Manager, CloudWatch Logs and, for Connect, Snowflake: HTTPS only.
      client.addEgressRule(ec2.Peer.anyIpv4(), ec2.Port.tcp(443), 'HTTPS to AWS APIs and Snowflake');
    }
    allow(this.connectSg, this.connectSg, CONNECT_PORT, 'Connect workers forward REST calls to the leader');
  }
}

/** Lets `from` open connections to `to` on `port`: an egress rule on one, an ingress rule on the other. */
function allow(from: ec2.SecurityGroup, to: ec2.SecurityGroup, port: number, description: string): void {
  from.addEgressRule(to, ec2.Port.tcp(port), description);
  to.addIngressRule(from, ec2.Port.tcp(port), description);
}
