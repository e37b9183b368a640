# serverless-python-requirements' unzip_requirements.py (zip: true), as the peer ships it,
# except that /tmp comes from the bench's layout instead of being the real /tmp.
import os
import shutil
import sys
import zipfile

tmp = os.environ.get('SERVERLESS_TORCH_TMP_DIR', '/tmp')
pkgdir = os.path.join(tmp, 'sls-py-req')

# We want our path to look like [working_dir, serverless_requirements, ...]
sys.path.insert(1, pkgdir)

if not os.path.exists(pkgdir):
    tempdir = os.path.join(tmp, '_temp-sls-py-req')
    if os.path.exists(tempdir):
        shutil.rmtree(tempdir)

    default_lambda_task_root = os.environ.get('LAMBDA_TASK_ROOT', os.getcwd())
    lambda_task_root = os.getcwd() if os.environ.get('IS_LOCAL') == 'true' else default_lambda_task_root
    zip_requirements = os.path.join(lambda_task_root, '.requirements.zip')

    zipfile.ZipFile(zip_requirements, 'r').extractall(tempdir)
    os.rename(tempdir, pkgdir)  # Atomic
