// The GitHub release role of the images stack: absent unless asked for, assumable only by the
// named repository's release tags and production environment, allowed to push both images and
// to run `cdk deploy`, and nothing more.
import { Match, Template } from 'aws-cdk-lib/assertions';
import { readConfig } from '../lib/config';
import { ACCOUNT, synth } from './synth';

const REPOSITORY = 'acme-corp/tributary.platform';
const PROVIDER_ARN = `arn:aws:iam::${ACCOUNT}:oidc-provider/token.actions.githubusercontent.com`;

interface Statement {
  readonly Effect: string;
  readonly Action: string | string[];
  readonly Resource: unknown;
}

/** Every statement of the identity policies attached to the release role. */
function roleStatements(images: Template): Statement[] {
  const role = Object.keys(images.findResources('AWS::IAM::Role', { Properties: { RoleName: 'tributary-github-release' } }));
  expect(role).toHaveLength(1);
  const policies = Object.values(images.findResources('AWS::IAM::Policy'))
    .filter((p) => (p.Properties.Roles as unknown[]).some((r) => JSON.stringify(r) === JSON.stringify({ Ref: role[0] })));
  return policies.flatMap((p) => p.Properties.PolicyDocument.Statement as Statement[]);
}

/** The statements allowing `action` on `resource` (either may be listed among others). */
function allowing(statements: Statement[], action: string, resource: unknown): Statement[] {
  const list = (v: unknown) => (Array.isArray(v) ? v : [v]);
  return statements.filter((s) => s.Effect === 'Allow'
    && list(s.Action).includes(action)
    && list(s.Resource).some((r) => JSON.stringify(r) === JSON.stringify(resource)));
}

test('by default there is no release role, no OIDC provider and no output', () => {
  const { images } = synth();
  images.resourceCountIs('AWS::IAM::Role', 0);
  images.resourceCountIs('AWS::IAM::OIDCProvider', 0);
  expect(Object.keys(images.findOutputs('*'))).toEqual([]);
});

describe('with githubRepository', () => {
  let images: Template;
  beforeAll(() => {
    images = synth({ githubRepository: REPOSITORY }).images;
  });

  test('the role trusts only GitHub\'s provider, for the repository\'s v* tags and its production environment', () => {
    const provider = Object.keys(images.findResources('AWS::IAM::OIDCProvider'));
    expect(provider).toHaveLength(1);
    images.hasResourceProperties('AWS::IAM::OIDCProvider', {
      Url: 'https://token.actions.githubusercontent.com',
      ClientIdList: ['sts.amazonaws.com'],
    });
    images.hasResourceProperties('AWS::IAM::Role', {
      RoleName: 'tributary-github-release',
      MaxSessionDuration: 3600,
      AssumeRolePolicyDocument: {
        Version: '2012-10-17',
        Statement: [Match.objectEquals({
          Effect: 'Allow',
          Action: 'sts:AssumeRoleWithWebIdentity',
          Principal: { Federated: { Ref: provider[0] } },
          Condition: {
            StringEquals: { 'token.actions.githubusercontent.com:aud': 'sts.amazonaws.com' },
            StringLike: {
              'token.actions.githubusercontent.com:sub': [
                `repo:${REPOSITORY}:ref:refs/tags/v*`,
                `repo:${REPOSITORY}:environment:production`,
              ],
            },
          },
        })],
      },
    });
  });

  test('the role may push and pull both repositories, and get a registry token', () => {
    const statements = roleStatements(images);
    const repositories = Object.keys(images.findResources('AWS::ECR::Repository'));
    expect(repositories).toHaveLength(2);
    const push = ['ecr:BatchCheckLayerAvailability', 'ecr:InitiateLayerUpload', 'ecr:UploadLayerPart', 'ecr:CompleteLayerUpload', 'ecr:PutImage'];
    const pull = ['ecr:GetDownloadUrlForLayer', 'ecr:BatchGetImage'];
    for (const repository of repositories) {
      for (const action of [...push, ...pull]) {
        expect(`${repository} ${action}: ${allowing(statements, action, { 'Fn::GetAtt': [repository, 'Arn'] }).length}`)
          .toBe(`${repository} ${action}: 1`);
      }
    }
    // The action has no resource of its own: "*" is the only form IAM accepts.
    expect(allowing(statements, 'ecr:GetAuthorizationToken', '*')).toHaveLength(1);
  });

  test('the role may assume this account\'s CDK bootstrap roles in this region, and nothing else', () => {
    const statements = roleStatements(images);
    const bootstrap = `arn:aws:iam::${ACCOUNT}:role/cdk-hnb659fds-*-${ACCOUNT}-us-east-1`;
    expect(allowing(statements, 'sts:AssumeRole', bootstrap)).toHaveLength(1);
    const actions = statements.flatMap((s) => (Array.isArray(s.Action) ? s.Action : [s.Action]));
    expect(actions.filter((a) => !a.startsWith('ecr:'))).toEqual(['sts:AssumeRole']);
    expect(statements.every((s) => s.Effect === 'Allow')).toBe(true);
  });

  test('the role\'s ARN is the output GithubReleaseRoleArn', () => {
    const role = Object.keys(images.findResources('AWS::IAM::Role'))[0];
    images.hasOutput('GithubReleaseRoleArn', { Value: { 'Fn::GetAtt': [role, 'Arn'] } });
  });
});

test('with githubOidcProviderArn the existing provider is trusted and none is created', () => {
  const { images } = synth({ githubRepository: REPOSITORY, githubOidcProviderArn: PROVIDER_ARN });
  images.resourceCountIs('AWS::IAM::OIDCProvider', 0);
  images.hasResourceProperties('AWS::IAM::Role', {
    RoleName: 'tributary-github-release',
    AssumeRolePolicyDocument: { Statement: [Match.objectLike({ Principal: { Federated: PROVIDER_ARN } })] },
  });
});

describe('config: githubRepository and githubOidcProviderArn', () => {
  const read = (context: Record<string, string>) =>
    readConfig((key) => ({ certificateArn: `arn:aws:acm:us-east-1:${ACCOUNT}:certificate/x`, ...context })[key]);

  test('owner/name is taken as it is; unset is off', () => {
    expect(read({ githubRepository: REPOSITORY }).githubRepository).toBe(REPOSITORY);
    expect(read({}).githubRepository).toBeUndefined();
  });

  test.each([
    'acme',
    'acme/tributary/extra',
    'acme/*',
    'acme/tri?utary',
    '*/tributary',
    'https://github.com/acme/tributary',
    '-acme/tributary',
    'acme/',
  ])('refuses githubRepository=%s', (githubRepository) => {
    expect(() => read({ githubRepository })).toThrow(/context githubRepository must be owner\/name/);
  });

  test('refuses githubOidcProviderArn without githubRepository', () => {
    expect(() => read({ githubOidcProviderArn: PROVIDER_ARN })).toThrow(/githubOidcProviderArn goes with githubRepository/);
  });

  test('refuses a githubOidcProviderArn of another issuer', () => {
    expect(() => read({ githubRepository: REPOSITORY, githubOidcProviderArn: `arn:aws:iam::${ACCOUNT}:oidc-provider/example.com` }))
      .toThrow(/context githubOidcProviderArn must be/);
  });
});
