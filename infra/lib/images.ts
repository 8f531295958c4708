// The container registries, in a stack of their own that is deployed first: the services of
// the main stack cannot start before their images are pushed, and a registry cannot receive an
// image before it exists.
//
//   tributary          the repository's Dockerfile (gateway, registry, processor, topics apply)
//   tributary-connect  Kafka Connect 4.3.1 with the Snowflake sink plugin (docs/aws.md)
//
// Tags are immutable (a tag always names the image that was tested), images are scanned on
// push, encrypted with KMS, and only the newest 50 of each repository are kept. Deleting the
// stack keeps the repositories and their images.
//
// With -c githubRepository=owner/name the stack also holds the role that repository's release
// workflow (.github/workflows/release.yml) assumes through GitHub's OIDC provider to push both
// images and run `cdk deploy`.
import { CfnOutput, DefaultStackSynthesizer, Duration, RemovalPolicy, Stack, StackProps } from 'aws-cdk-lib';
import * as ecr from 'aws-cdk-lib/aws-ecr';
import * as iam from 'aws-cdk-lib/aws-iam';
import { Construct } from 'constructs';
import { TributaryConfig } from './config';

/** GitHub Actions' OIDC issuer, as IAM names it in provider ARNs and condition keys. */
export const GITHUB_OIDC_ISSUER = 'token.actions.githubusercontent.com';
/**
 * The GitHub environment of the release workflow's deploy job. A job that names an environment
 * gets the token subject `repo:<owner/name>:environment:<environment>` instead of its ref.
 */
export const GITHUB_RELEASE_ENVIRONMENT = 'production';

export interface ImagesStackProps extends StackProps {
  readonly config: TributaryConfig;
}

export class ImagesStack extends Stack {
  readonly tributary: ecr.Repository;
  readonly connect: ecr.Repository;
  /** Plain names (not tokens), for the platform stack to find the repositories by. */
  readonly tributaryName: string;
  readonly connectName: string;
  /** The role of the GitHub release workflow, when githubRepository is set. */
  readonly releaseRole?: iam.Role;

  constructor(scope: Construct, id: string, props: ImagesStackProps) {
    super(scope, id, props);
    const repository = (repoId: string, repositoryName: string) =>
      new ecr.Repository(this, repoId, {
        repositoryName,
        imageTagMutability: ecr.TagMutability.IMMUTABLE,
        imageScanOnPush: true,
        encryption: ecr.RepositoryEncryption.KMS,
        removalPolicy: RemovalPolicy.RETAIN,
        lifecycleRules: [
          { description: 'drop untagged layers of failed pushes', tagStatus: ecr.TagStatus.UNTAGGED, maxImageAge: Duration.days(7), rulePriority: 1 },
          { description: 'keep the newest 50 images', tagStatus: ecr.TagStatus.ANY, maxImageCount: 50, rulePriority: 2 },
        ],
      });
    this.tributaryName = props.config.name;
    this.connectName = `${props.config.name}-connect`;
    this.tributary = repository('Tributary', this.tributaryName);
    this.connect = repository('Connect', this.connectName);
    const { githubRepository, githubOidcProviderArn } = props.config;
    if (githubRepository) this.releaseRole = this.githubReleaseRole(props.config.name, githubRepository, githubOidcProviderArn);
  }

  /**
   * The role GitHub Actions assumes with the workflow's OIDC token: only from `repository`, only
   * for a release tag `v*` (the images job) or a job in the release environment (the deploy job,
   * whose token names the environment instead of the tag; the environment's rules decide which
   * refs may use it).
   */
  private githubReleaseRole(name: string, repository: string, providerArn?: string): iam.Role {
    // IAM takes one provider per issuer and account: reuse the existing one when given.
    const provider = providerArn
      ? iam.OidcProviderNative.fromOidcProviderArn(this, 'GithubOidcProvider', providerArn)
      : new iam.OidcProviderNative(this, 'GithubOidcProvider', {
        url: `https://${GITHUB_OIDC_ISSUER}`,
        clientIds: ['sts.amazonaws.com'],
      });
    const role = new iam.Role(this, 'GithubRelease', {
      roleName: `${name}-github-release`,
      description: `GitHub Actions releases of ${repository}: push the images, cdk deploy (infra/lib/images.ts)`,
      maxSessionDuration: Duration.hours(1),
      assumedBy: new iam.OpenIdConnectPrincipal(provider, {
        StringEquals: { [`${GITHUB_OIDC_ISSUER}:aud`]: 'sts.amazonaws.com' },
        StringLike: {
          [`${GITHUB_OIDC_ISSUER}:sub`]: [
            `repo:${repository}:ref:refs/tags/v*`,
            `repo:${repository}:environment:${GITHUB_RELEASE_ENVIRONMENT}`,
          ],
        },
      }),
    });
    // Push and pull, and ecr:GetAuthorizationToken on "*" (grantPullPush adds it: the action has
    // no resource to scope to). No KMS statement: the repositories are encrypted with ECR's
    // AWS-managed key (aws/ecr, no encryptionKey given), which ECR itself uses through the grant
    // it made when it created the repository; pushing and pulling need only ECR permissions.
    this.tributary.grantPullPush(role);
    this.connect.grantPullPush(role);
    // `cdk deploy` does its work through the bootstrap roles (deploy, file publishing, lookup)
    // of this account and region; they trust any principal of the account allowed to assume them.
    const qualifier = DefaultStackSynthesizer.DEFAULT_QUALIFIER;
    role.addToPolicy(new iam.PolicyStatement({
      actions: ['sts:AssumeRole'],
      resources: [`arn:${this.partition}:iam::${this.account}:role/cdk-${qualifier}-*-${this.account}-${this.region}`],
    }));
    new CfnOutput(this, 'GithubReleaseRoleArn', {
      description: 'Role of the GitHub release workflow: the repository variable AWS_RELEASE_ROLE_ARN (docs/aws.md)',
      value: role.roleArn,
    });
    return role;
  }
}
