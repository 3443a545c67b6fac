// ESLint flat config: type-aware typescript-eslint rules plus the module boundaries
// of the architecture (agent and controller never import each other).
import { createTypeScriptImportResolver } from 'eslint-import-resolver-typescript';
import eslintConfigPrettier from 'eslint-config-prettier/flat';
import { importX } from 'eslint-plugin-import-x';
import tseslint from 'typescript-eslint';

// Generated code is imported through lib/proto/<package>.ts, one index module per package.
const GENERATED = {
  regex: String.raw`(^|/)lib/gen/|^\.\./gen/`,
  message: 'import generated code through lib/proto/<package> (one index module per generated package)',
};

const boundary = (forbidden, why, patterns = [GENERATED]) => ({
  'no-restricted-imports': [
    'error',
    {
      patterns: [...(forbidden ? [{ regex: forbidden, message: why }] : []), ...patterns],
    },
  ],
});

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', 'lib/gen/**', 'native/build/**', '**/*.mjs', '**/*.js'] },
  ...tseslint.configs.recommendedTypeChecked,
  {
    plugins: { 'import-x': importX },
    settings: {
      ...importX.flatConfigs.typescript.settings,
      'import-x/resolver-next': [createTypeScriptImportResolver({ project: './tsconfig.json' })],
    },
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      'import-x/no-cycle': ['error', { ignoreExternal: true }],
      '@typescript-eslint/no-floating-promises': [
        'error',
        {
          allowForKnownSafeCalls: [
            {
              from: 'package',
              package: 'node:test',
              name: ['describe', 'it', 'test', 'suite', 'before', 'after', 'beforeEach', 'afterEach'],
            },
          ],
        },
      ],
      '@typescript-eslint/no-misused-promises': ['error', { checksVoidReturn: { arguments: false } }],
      '@typescript-eslint/consistent-type-imports': ['error', { fixStyle: 'inline-type-imports' }],
      '@typescript-eslint/require-await': 'off',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_' }],
      eqeqeq: ['error', 'always'],
      'no-console': 'error',
      'no-restricted-properties': [
        'error',
        { object: 'describe', property: 'only', message: 'no focused tests' },
        { object: 'it', property: 'only', message: 'no focused tests' },
        { object: 'test', property: 'only', message: 'no focused tests' },
      ],
    },
  },
  {
    files: ['agent/**/*.ts'],
    rules: boundary(
      String.raw`^(\.\./)+controller/`,
      'agent/ must not import controller/: share code through lib/ or proto/',
    ),
  },
  {
    files: ['controller/**/*.ts'],
    rules: boundary(
      String.raw`^(\.\./)+agent/`,
      'controller/ must not import agent/: share code through lib/ or proto/',
    ),
  },
  {
    files: ['lib/**/*.ts'],
    rules: boundary(
      String.raw`^(\.\./)+(agent|controller)/`,
      'lib/ is shared: it must not import agent/ or controller/',
    ),
  },
  {
    files: ['lib/proto/**/*.ts'],
    rules: boundary(
      String.raw`^(\.\./)+(agent|controller)/`,
      'lib/ is shared: it must not import agent/ or controller/',
      [],
    ),
  },
  {
    files: ['test/**/*.ts'],
    rules: {
      ...boundary(null, null),
      'no-console': 'off',
      '@typescript-eslint/unbound-method': 'off',
      '@typescript-eslint/no-unsafe-assignment': 'off',
      '@typescript-eslint/no-unsafe-member-access': 'off',
    },
  },
  eslintConfigPrettier,
);
